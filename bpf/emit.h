// oisp-sensor: the emit path every probe family shares (bpf/openssl.c, bpf/process.c, ...).
// The loader compiles this header and every family's file as one BPF object, so the ring, the
// filters, the verdict map, the sequence numbers and the loss counters exist once.
//
// Rules (DESIGN.md): only stable ABI (uprobe argument registers, tracepoint fields, helpers),
// never kernel structs; writes captured at uprobe entry, reads at entry + return; every byte of a
// call goes out in chunks through the ring buffer, and what cannot be written is counted, never
// dropped silently; uninteresting connections are filtered here so they cost only the trap.
//
// Chunks are reserved directly in the ring in three size classes instead of being staged in a
// per-CPU scratch buffer: one copy instead of two, and no corruption when a preemptible kernel
// lets another task run this program on the same CPU mid-copy.

#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf.h>

// The pid namespace the daemon lives in (st_dev in the kernel's encoding, and st_ino of
// /proc/self/ns/pid), 0 when it is the initial one. A daemon in a container reads /proc with its
// own namespace's pids, so records carry those; tasks outside its namespace are not reported.
#ifndef PIDNS_INO
#define PIDNS_INO 0
#define PIDNS_DEV 0
#endif

#define CHUNK_LARGE 16384
#define CHUNK_MEDIUM 4096
#define CHUNK_SMALL 512
// Chunks emitted by one program run; a larger call continues in a tail call of the same program
// (at most 33 tail calls: 34 * 64 * 16 KiB = 34 MiB per SSL call, beyond that bytes are counted
// as lost and the connection is marked as having a gap).
#define CHUNKS_PER_RUN 64

enum record_kind {
    REC_WRITE = 1,     // plaintext handed to SSL_write*
    REC_READ = 2,      // plaintext returned by SSL_read*
    REC_SSL_FREE = 3,  // connection end
    REC_SET_FD = 4,    // ssl -> fd
    REC_CONNECT = 5,   // fd -> remote address
    REC_FORK = 6,
    REC_EXEC = 7,
    REC_EXIT = 8,
    REC_MMAP = 9,      // a file was mapped executable (discovery rescans the process's maps)
};

// Common header of every record. Data records are followed by `len` bytes of plaintext.
struct rec_hdr {
    u64 ts_ns;      // bpf_ktime_get_ns() at the call (CLOCK_MONOTONIC)
    u64 ssl;        // SSL* (connection identity together with pid)
    u64 seq;        // per-connection call sequence number: a jump means a lost call
    u64 total;      // bytes in the whole call
    u64 offset;     // offset of this chunk within the call
    u32 pid;        // tgid
    u32 tid;
    u32 uid;
    u32 len;        // bytes of data following this header
    s32 fd;         // REC_SET_FD / REC_CONNECT; -1 otherwise
    u16 kind;
    u16 family;     // REC_CONNECT: AF_INET / AF_INET6
    u32 aux;        // REC_FORK: child pid; REC_CONNECT: port (host order)
    u8 addr[16];    // REC_CONNECT: IPv4 (first 4 bytes) or IPv6 address
    char comm[16];
};

struct rec_small { struct rec_hdr h; u8 data[CHUNK_SMALL]; };
struct rec_medium { struct rec_hdr h; u8 data[CHUNK_MEDIUM]; };
struct rec_large { struct rec_hdr h; u8 data[CHUNK_LARGE]; };
struct rec_exec { struct rec_hdr h; char filename[256]; };

struct conn_key {
    u32 pid;
    u32 pad;
    u64 ssl;
};

// A call in progress: kept by tid across tail calls (and between read entry and return).
struct call_state {
    u64 ssl;
    u64 buf;
    u64 total;
    u64 offset;
    u64 seq;
    u64 ts_ns;
    u64 readbytes_ptr;  // SSL_read_ex's size_t *readbytes; 0 for SSL_read
    u16 kind;
};

// Filters written by user space: pid (tgid), uid, comm; 0/empty means "any".
struct filter_cfg {
    u32 pid;
    u32 uid;
    u32 filter_uid;
    u32 filter_comm;
    char comm[16];
};

BPF_RINGBUF_OUTPUT(records, RING_PAGES);
BPF_ARRAY(filter, struct filter_cfg, 1);
// Verdicts of user space by connection: VERDICT_IGNORE_ALL (not AI traffic, or no longer decoded:
// nothing of it is copied), or a connection joined mid-answer, whose reads are not copied while
// its next sequence number is the value (user space has seen every call before them) and until
// it writes again (see admitted).
#define VERDICT_IGNORE_ALL (~0ULL)
BPF_HASH(ignored, struct conn_key, u64, MAX_CONNECTIONS);
BPF_HASH(conn_seq, struct conn_key, u64, MAX_CONNECTIONS);    // next call sequence number
BPF_HASH(calls, u32, struct call_state, MAX_THREADS);         // by tid
BPF_PERCPU_ARRAY(lost_bytes, u64, 1);
BPF_PERCPU_ARRAY(lost_records, u64, 1);
BPF_PROG_ARRAY(continue_call, 1);

// tgid << 32 | tid of the current task as the daemon's pid namespace numbers it; 0 for a task
// outside that namespace.
static __always_inline u64 current_id(void) {
#if PIDNS_INO
    struct bpf_pidns_info ns = {};
    if (bpf_get_ns_current_pid_tgid(PIDNS_DEV, PIDNS_INO, &ns, sizeof(ns)))
        return 0;
    return ((u64)ns.tgid << 32) | ns.pid;
#else
    return bpf_get_current_pid_tgid();
#endif
}

// Loss per uid, so that one user's flood cannot hide others' loss in the totals. Bounded: an
// LRU hash of LOST_UIDS uids (the totals above stay exact if a uid is evicted).
struct lost_val {
    u64 bytes;
    u64 records;
};
BPF_TABLE("lru_hash", u32, struct lost_val, lost_by_uid, LOST_UIDS);

static __always_inline void count_lost(u64 bytes) {
    u32 zero = 0;
    u64 *b = lost_bytes.lookup(&zero);
    if (b)
        *b += bytes;
    u64 *r = lost_records.lookup(&zero);
    if (r)
        *r += 1;
    u32 uid = (u32)bpf_get_current_uid_gid();
    struct lost_val init = {};
    struct lost_val *v = lost_by_uid.lookup_or_try_init(&uid, &init);
    if (v) {
        __sync_fetch_and_add(&v->bytes, bytes);
        __sync_fetch_and_add(&v->records, 1);
    }
}

// True when the current task passes the user-space filters.
static __always_inline int wanted(u32 pid) {
    u32 zero = 0;
    struct filter_cfg *f = filter.lookup(&zero);
    if (!f)
        return 1;
    if (f->pid && f->pid != pid)
        return 0;
    if (f->filter_uid && f->uid != (u32)bpf_get_current_uid_gid())
        return 0;
    if (f->filter_comm) {
        char comm[16] = {};
        bpf_get_current_comm(&comm, sizeof(comm));
#pragma unroll
        for (int i = 0; i < 16; i++) {
            if (comm[i] != f->comm[i])
                return 0;
            if (comm[i] == 0)
                break;
        }
    }
    return 1;
}

static __always_inline void fill_hdr(struct rec_hdr *h, u16 kind, u32 pid, u32 tid) {
    h->ts_ns = bpf_ktime_get_ns();
    h->pid = pid;
    h->tid = tid;
    h->uid = (u32)bpf_get_current_uid_gid();
    h->kind = kind;
    h->fd = -1;
    h->ssl = 0;
    h->seq = 0;
    h->total = 0;
    h->offset = 0;
    h->len = 0;
    h->family = 0;
    h->aux = 0;
    __builtin_memset(h->addr, 0, sizeof(h->addr));
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline void data_hdr(struct rec_hdr *h, struct call_state *c, u32 pid, u32 tid,
                                     u64 len) {
    fill_hdr(h, c->kind, pid, tid);
    h->ts_ns = c->ts_ns;
    h->ssl = c->ssl;
    h->seq = c->seq;
    h->total = c->total;
    h->offset = c->offset;
    h->len = len;
}

// Emit one chunk of at most CHUNK_LARGE bytes at c->offset. Returns 0 on success.
static __always_inline int emit_chunk(struct call_state *c, u32 pid, u32 tid, u64 len) {
    const u8 *src = (const u8 *)(c->buf + c->offset);
    if (len <= CHUNK_SMALL) {
        struct rec_small *r = records.ringbuf_reserve(sizeof(struct rec_small));
        if (!r)
            return -1;
        data_hdr(&r->h, c, pid, tid, len);
        if (bpf_probe_read_user(r->data, len & (CHUNK_SMALL * 2 - 1), src))
            r->h.len = 0;
        records.ringbuf_submit(r, 0);
    } else if (len <= CHUNK_MEDIUM) {
        struct rec_medium *r = records.ringbuf_reserve(sizeof(struct rec_medium));
        if (!r)
            return -1;
        data_hdr(&r->h, c, pid, tid, len);
        if (bpf_probe_read_user(r->data, len & (CHUNK_MEDIUM * 2 - 1), src))
            r->h.len = 0;
        records.ringbuf_submit(r, 0);
    } else {
        struct rec_large *r = records.ringbuf_reserve(sizeof(struct rec_large));
        if (!r)
            return -1;
        data_hdr(&r->h, c, pid, tid, len);
        if (bpf_probe_read_user(r->data, len & (CHUNK_LARGE * 2 - 1), src))
            r->h.len = 0;
        records.ringbuf_submit(r, 0);
    }
    return 0;
}

// Emit up to CHUNKS_PER_RUN chunks of the call kept for this tid; tail-call for the rest.
static __always_inline int emit_call(struct pt_regs *ctx, u32 pid, u32 tid) {
    struct call_state *c = calls.lookup(&tid);
    if (!c)
        return 0;
    for (int i = 0; i < CHUNKS_PER_RUN; i++) {
        if (c->offset >= c->total)
            break;
        u64 len = c->total - c->offset;
        if (len > CHUNK_LARGE)
            len = CHUNK_LARGE;
        if (emit_chunk(c, pid, tid, len)) {
            count_lost(c->total - c->offset);
            c->offset = c->total;
            break;
        }
        c->offset += len;
    }
    if (c->offset < c->total) {
        continue_call.call(ctx, 0);
        // Tail call limit reached: the rest of the call is lost, and counted.
        count_lost(c->total - c->offset);
    }
    calls.delete(&tid);
    return 0;
}

// Next sequence number of a connection, or -1 when the connection is filtered out.
static __always_inline s64 next_seq(u32 pid, u64 ssl) {
    struct conn_key key = {.pid = pid, .ssl = ssl};
    u64 zero = 0;
    u64 *seq = conn_seq.lookup_or_try_init(&key, &zero);
    if (!seq)
        return -1;
    return (s64)__sync_fetch_and_add(seq, 1);
}

// True when a call of this kind (REC_WRITE / REC_READ, as the client sees it) is wanted: the
// connection not judged uninteresting by user space, and the process passing the filters.
// Checked first so that other TLS traffic costs only the trap and this lookup.
//
// A connection joined mid-answer has its reads skipped only while user space has seen all its
// calls: had one gone by unseen (a write, the next request), the reads after it are that
// request's answer. Its first write, or such an unseen call, ends the skipping (user space
// renews the verdict at the next skipped read it gets).
static __always_inline int admitted(u32 pid, u64 ssl, u16 kind) {
    struct conn_key key = {.pid = pid, .ssl = ssl};
    u64 *verdict = ignored.lookup(&key);
    if (verdict) {
        if (*verdict == VERDICT_IGNORE_ALL)
            return 0;
        u64 *next = conn_seq.lookup(&key);
        if (kind == REC_READ && next && *next == *verdict)
            return 0;
        ignored.delete(&key);
    }
    return wanted(pid);
}

// This thread's call as emit_call sends it: total bytes at buf, the connection's sequence number.
static __always_inline void store_call(u16 kind, u64 ssl, u64 buf, u64 total, s64 seq, u32 tid) {
    struct call_state c = {};
    c.kind = kind;
    c.ssl = ssl;
    c.buf = buf;
    c.total = total;
    c.seq = seq;
    c.ts_ns = bpf_ktime_get_ns();
    calls.update(&tid, &c);
}

static __always_inline int begin_write(u64 ssl, u64 buf, u64 total, u32 pid, u32 tid) {
    if (!admitted(pid, ssl, REC_WRITE))
        return 0;
    s64 seq = next_seq(pid, ssl);
    if (seq < 0)
        return 0;
    store_call(REC_WRITE, ssl, buf, total, seq, tid);
    return 1;
}

static __always_inline void begin_read(u64 ssl, u64 buf, u64 readbytes_ptr, u32 pid, u32 tid) {
    if (!admitted(pid, ssl, REC_READ))
        return;
    struct call_state c = {};
    c.kind = REC_READ;
    c.ssl = ssl;
    c.buf = buf;
    c.readbytes_ptr = readbytes_ptr;
    calls.update(&tid, &c);
}

// At a read's return probe: the call begin_read stored for this thread, or NULL (none, or a task
// outside the daemon's pid namespace).
static __always_inline struct call_state *begun_read(u32 *pid, u32 *tid) {
    u64 id = current_id();
    if (!id)
        return 0;
    *pid = id >> 32;
    *tid = (u32)id;
    return calls.lookup(tid);
}

// A read returned n bytes into buf (each family finds n its own way): give the call the
// connection's next sequence number and emit it through this tid's call state. Nothing read, or a
// connection filtered out: the call is dropped.
static __always_inline int finish_read(struct pt_regs *ctx, u64 ssl, u64 buf, s64 n, u32 pid, u32 tid) {
    s64 seq = n > 0 ? next_seq(pid, ssl) : -1;
    if (seq < 0) {
        calls.delete(&tid);
        return 0;
    }
    store_call(REC_READ, ssl, buf, n, seq, tid);
    return emit_call(ctx, pid, tid);
}

// Continuation of a large call (tail-called from emit_call).
int continue_emit(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    return emit_call(ctx, id >> 32, (u32)id);
}

static __always_inline void emit_small(u16 kind, u64 ssl, s32 fd, u32 pid, u32 tid) {
    struct rec_hdr *h = records.ringbuf_reserve(sizeof(struct rec_hdr));
    if (!h) {
        count_lost(0);
        return;
    }
    fill_hdr(h, kind, pid, tid);
    h->ssl = ssl;
    h->fd = fd;
    records.ringbuf_submit(h, 0);
}

