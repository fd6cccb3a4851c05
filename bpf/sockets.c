// oisp-sensor: plain HTTP to local model servers (Ollama, LM Studio, vLLM, llama.cpp), from the
// socket syscall tracepoints. Only tracepoint arguments and user memory are read (DESIGN.md BPF
// rule 1): sockaddrs, iovec arrays and msghdrs belong to the caller.
//
// Which sockets: those whose destination is in `sockets_dest` (an LPM trie written by user space
// from capture.plain_http, oisp_daemon/capture/plain_http.py), learned at connect (client side)
// and, when configured, at accept on a listener bound to such an address (server side). They live
// in `sockets_fds` by (pid, fd) until close. A read/write of a process without tracked sockets
// pays one array read at entry (`sockets_pids`), one of a process with some a lookup in
// `sockets_fds`; the exit reads one array slot (no tracked call in flight) or looks the call up.
//
// Connection identity (the `ssl` field of the records): SOCK_TAG | conn_no << 32 | fd. Bit 63 is
// never set in a user-space pointer (x86-64 and arm64 user addresses are below 2^48), so it cannot
// collide with an SSL* or another family's handle; conn_no numbers connections since load, so a
// reused fd is a new connection.
//
// Data is captured at the syscall's exit, for the bytes the kernel really moved (`ret`): a
// non-blocking socket may take part of a write, or none (EAGAIN), and the rest is written again.
// Server-side connections are reported from the client's point of view: what the server reads is
// the request (REC_WRITE), what it writes the response (REC_READ), so the same decoders apply.

#define SOCK_TAG (1ULL << 63)
#define SOCK_IOV_MAX 1024      // UIO_MAXIOV
#define SOCK_EINPROGRESS 115
#define SOCK_MSG_PEEK 2
#define SOCK_AF_INET 2
#define SOCK_AF_INET6 10
#ifndef SOCKETS_DESTS
#define SOCKETS_DESTS 4096
#endif

// The syscall tracepoints' records (struct syscall_trace_enter / _exit): after the common header
// and the syscall number, one 8-byte slot per argument, or the return value. plain_http.py checks
// these offsets against tracefs before loading. Declared here rather than generated per
// tracepoint by bcc, which defines a tracepoint's struct once per program that names it.
struct sockets_sys_enter {
    u64 common;
    u64 nr;
    u64 arg[6];
};

struct sockets_sys_exit {
    u64 common;
    u64 nr;
    s64 ret;
};

// LPM trie key: port (network order) then the address as IPv6 (IPv4 as ::ffff:a.b.c.d), so one
// trie holds both families and a CIDR:port entry is one prefix (16 bits of port + address bits).
struct sockets_dest_key {
    u32 prefixlen;
    u8 port[2];
    u8 addr[16];
    u8 pad[2];
};

struct sockets_fd_key {
    u32 pid;
    u32 fd;
};

struct sockets_conn {
    u64 id;      // connection identity (see above)
    u32 server;  // 1: the accepting end (directions swapped)
    u32 pad;
};

// A read or write in flight on a tracked socket, kept by tid from entry to exit (and across the
// tail calls of a large one). `c.buf + c.offset` is always the next byte to copy.
struct sockets_call {
    struct call_state c;
    u64 iov;       // user iovec array; 0 for a single buffer (c.buf)
    u64 seg_left;  // bytes still to copy from the current buffer or iovec
    u32 iovcnt;
    u32 iov_next;  // next iovec to load
    u32 ts_at_exit;  // a read: timestamp taken when the bytes arrived
    u32 pid;         // a call left by a task killed inside the syscall is not another's
};

struct sockets_user_iovec {
    u64 base;
    u64 len;
};

// user_msghdr (UAPI, LP64): msg_name, msg_namelen (+pad), msg_iov at 16, msg_iovlen at 24
#define SOCK_MSG_IOV_OFF 16
#define SOCK_MSG_IOVLEN_OFF 24

BPF_F_TABLE("lpm_trie", struct sockets_dest_key, u8, sockets_dest, SOCKETS_DESTS, BPF_F_NO_PREALLOC);
BPF_HASH(sockets_ports, u16, u8, SOCKETS_DESTS);  // ports in the set (network order): wildcard binds
BPF_TABLE("lru_hash", struct sockets_fd_key, struct sockets_conn, sockets_fds, MAX_CONNECTIONS);
// One bit per pid (PID_MAX_LIMIT pids) that has had a tracked socket: a read/write of any other
// process costs one array read, inlined by the verifier, instead of a hash lookup. Bits are never
// cleared (user space could not clear one without racing the kernel's sets of its neighbours): a
// pid that once tracked a socket pays the hash lookup, which stays exact.
#define SOCK_PID_WORDS 65536
BPF_ARRAY(sockets_pids, u64, SOCK_PID_WORDS);
BPF_HASH(sockets_listeners, struct sockets_fd_key, u8, MAX_CONNECTIONS);  // server side
BPF_HASH(sockets_pending, u32, s32, MAX_THREADS);      // connect/bind/accept in flight: fd by tid
BPF_HASH(sockets_calls, u32, struct sockets_call, MAX_THREADS);
// How many sockets_calls entries exist: 0 (no tracked call anywhere, the usual case) lets every
// syscall exit return after an array read instead of a hash lookup. A task killed inside a
// tracked call leaves its entry and the count above 0: exits then do the lookup, still correct.
BPF_ARRAY(sockets_inflight, u64, 1);
BPF_ARRAY(sockets_config, u32, 1);                     // [0]: 1 = capture the accepting end too
BPF_ARRAY(sockets_next_id, u64, 1);
BPF_PROG_ARRAY(sockets_continue, 1);                   // tracepoint programs: not continue_call's type

// The destination key of a user sockaddr; 0 when it is not AF_INET/AF_INET6.
static __always_inline int sockets_key(struct sockets_dest_key *k, const u8 *sa, u16 *family_out) {
    u16 family = 0;
    if (bpf_probe_read_user(&family, sizeof(family), sa))
        return 0;
    if (bpf_probe_read_user(k->port, 2, sa + 2))
        return 0;
    if (family == SOCK_AF_INET) {
        k->addr[10] = 0xff;
        k->addr[11] = 0xff;
        if (bpf_probe_read_user(&k->addr[12], 4, sa + 4))
            return 0;
    } else if (family == SOCK_AF_INET6) {
        if (bpf_probe_read_user(k->addr, 16, sa + 8))
            return 0;
    } else {
        return 0;
    }
    k->prefixlen = 16 + 128;
    *family_out = family;
    return 1;
}

static __always_inline void sockets_end(u64 cid, u32 pid, u32 tid) {
    struct conn_key k = {.pid = pid, .ssl = cid};
    ignored.delete(&k);
    conn_seq.delete(&k);
    emit_small(REC_SSL_FREE, cid, -1, pid, tid);
}

// A tracked connection begins on (pid, fd); one that the fd still held ends first (its close was
// not seen: dup2 over it, or close_range).
static __always_inline void sockets_open(u32 pid, u32 tid, s32 fd, u32 server) {
    struct sockets_fd_key key = {.pid = pid, .fd = (u32)fd};
    struct sockets_conn *old = sockets_fds.lookup(&key);
    if (old)
        sockets_end(old->id, pid, tid);
    u32 zero = 0;
    u64 no = 0;
    u64 *next = sockets_next_id.lookup(&zero);
    if (next)
        no = __sync_fetch_and_add(next, 1);
    struct sockets_conn conn = {};
    conn.id = SOCK_TAG | ((no & 0x7fffffffULL) << 32) | (u32)fd;
    conn.server = server;
    sockets_fds.update(&key, &conn);
    u32 word = pid >> 6;
    u64 *bits = sockets_pids.lookup(&word);
    if (bits)
        __sync_fetch_and_or(bits, 1ULL << (pid & 63));
    emit_small(REC_SET_FD, conn.id, fd, pid, tid);
}

// Whether the process may have a tracked socket (see sockets_pids).
static __always_inline int sockets_pid_tracks(u32 pid) {
    u32 word = pid >> 6;
    if (word >= SOCK_PID_WORDS)
        return 1;
    u64 *bits = sockets_pids.lookup(&word);
    return bits && (*bits & (1ULL << (pid & 63)));
}

// Entry of a read/write family call: remember where its bytes are, if the socket is tracked.
static __always_inline int sockets_enter(u64 fd, u64 buf, u64 iov, u64 iovcnt, u16 dir) {
    u64 id = current_id();
    if (!sockets_pid_tracks(id >> 32))
        return 0;
    struct sockets_fd_key key = {.pid = id >> 32, .fd = (u32)fd};
    struct sockets_conn *conn = sockets_fds.lookup(&key);
    if (!conn || !id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    u16 kind = conn->server ? (dir == REC_WRITE ? REC_READ : REC_WRITE) : dir;
    if (!admitted(pid, conn->id, kind))
        return 0;
    struct sockets_call s = {};
    s.c.ssl = conn->id;
    s.c.kind = kind;
    s.c.buf = buf;
    s.c.ts_ns = bpf_ktime_get_ns();
    s.iov = iov;
    s.iovcnt = iovcnt > SOCK_IOV_MAX ? SOCK_IOV_MAX : (u32)iovcnt;
    s.ts_at_exit = dir == REC_READ;
    s.pid = pid;
    if (sockets_calls.insert(&tid, &s) == 0) {
        u32 zero = 0;
        u64 *n = sockets_inflight.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    } else {
        sockets_calls.update(&tid, &s);  // a call its task never finished: replaced, counted once
    }
    return 0;
}

// The thread's call is over: its entry goes, and the count with it.
static __always_inline void sockets_done(u32 tid) {
    if (sockets_calls.delete(&tid) == 0) {
        u32 zero = 0;
        u64 *n = sockets_inflight.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, -1);
    }
}

// Same, for sendmsg/recvmsg: the iovec array comes from the caller's msghdr.
static __always_inline int sockets_enter_msg(u64 fd, const u8 *msg, u16 dir) {
    u64 id = current_id();
    if (!sockets_pid_tracks(id >> 32))
        return 0;
    struct sockets_fd_key key = {.pid = id >> 32, .fd = (u32)fd};
    if (!sockets_fds.lookup(&key) || !id)
        return 0;
    u64 iov = 0, iovlen = 0;
    if (bpf_probe_read_user(&iov, sizeof(iov), msg + SOCK_MSG_IOV_OFF) ||
        bpf_probe_read_user(&iovlen, sizeof(iovlen), msg + SOCK_MSG_IOVLEN_OFF))
        return 0;
    if (!iov)
        return 0;
    return sockets_enter(fd, 0, iov, iovlen, dir);
}

// Copy up to CHUNKS_PER_RUN chunks of the thread's call; tail-call for the rest.
static __always_inline int sockets_emit(void *ctx, u32 pid, u32 tid) {
    struct sockets_call *s = sockets_calls.lookup(&tid);
    if (!s)
        return 0;
    for (int i = 0; i < CHUNKS_PER_RUN; i++) {
        if (s->c.offset >= s->c.total)
            break;
        if (s->seg_left == 0) {
            // next iovec (zero-length ones are skipped, one loop turn each)
            struct sockets_user_iovec v = {};
            if (!s->iov || s->iov_next >= s->iovcnt ||
                bpf_probe_read_user(&v, sizeof(v), (void *)(s->iov + (u64)s->iov_next * sizeof(v)))) {
                count_lost(s->c.total - s->c.offset);
                s->c.offset = s->c.total;
                break;
            }
            s->iov_next++;
            u64 left = s->c.total - s->c.offset;
            s->seg_left = v.len < left ? v.len : left;
            s->c.buf = v.base - s->c.offset;
            continue;
        }
        u64 len = s->seg_left > CHUNK_LARGE ? CHUNK_LARGE : s->seg_left;
        if (emit_chunk(&s->c, pid, tid, len)) {
            count_lost(s->c.total - s->c.offset);
            s->c.offset = s->c.total;
            break;
        }
        s->c.offset += len;
        s->seg_left -= len;
    }
    if (s->c.offset < s->c.total) {
        sockets_continue.call(ctx, 0);
        // Tail call limit reached: the rest of the call is lost, and counted.
        count_lost(s->c.total - s->c.offset);
    }
    sockets_done(tid);
    return 0;
}

// Exit of a read/write family call: emit the `ret` bytes it moved.
static __always_inline int sockets_exit(void *ctx, long ret) {
    u32 zero = 0;
    u64 *inflight = sockets_inflight.lookup(&zero);
    if (!inflight || !*inflight)
        return 0;
    u64 id = current_id();
    u32 tid = (u32)id;
    struct sockets_call *s = sockets_calls.lookup(&tid);
    if (!s)
        return 0;
    u32 pid = id >> 32;
    s64 seq = ret > 0 && s->pid == pid ? next_seq(pid, s->c.ssl) : -1;
    if (seq < 0) {
        sockets_done(tid);  // nothing moved (EAGAIN, EOF, error)
        return 0;
    }
    s->c.seq = seq;
    s->c.total = ret;
    s->c.offset = 0;
    s->seg_left = s->iov ? 0 : (u64)ret;
    if (s->ts_at_exit)
        s->c.ts_ns = bpf_ktime_get_ns();
    return sockets_emit(ctx, pid, tid);
}

int sockets_continue_emit(struct sockets_sys_exit *args) {
    u64 id = current_id();
    if (!id)
        return 0;
    return sockets_emit(args, id >> 32, (u32)id);
}

int sockets_enter_write(struct sockets_sys_enter *args) {
    return sockets_enter(args->arg[0], args->arg[1], 0, 0, REC_WRITE);
}
int sockets_enter_read(struct sockets_sys_enter *args) {
    return sockets_enter(args->arg[0], args->arg[1], 0, 0, REC_READ);
}
int sockets_enter_sendto(struct sockets_sys_enter *args) {
    return sockets_enter(args->arg[0], args->arg[1], 0, 0, REC_WRITE);
}
int sockets_enter_recvfrom(struct sockets_sys_enter *args) {
    if (args->arg[3] & SOCK_MSG_PEEK)
        return 0;  // the same bytes are read again
    return sockets_enter(args->arg[0], args->arg[1], 0, 0, REC_READ);
}
int sockets_enter_writev(struct sockets_sys_enter *args) {
    return sockets_enter(args->arg[0], 0, args->arg[1], args->arg[2], REC_WRITE);
}
int sockets_enter_readv(struct sockets_sys_enter *args) {
    return sockets_enter(args->arg[0], 0, args->arg[1], args->arg[2], REC_READ);
}
int sockets_enter_sendmsg(struct sockets_sys_enter *args) {
    return sockets_enter_msg(args->arg[0], (const u8 *)args->arg[1], REC_WRITE);
}
int sockets_enter_recvmsg(struct sockets_sys_enter *args) {
    if (args->arg[2] & SOCK_MSG_PEEK)
        return 0;
    return sockets_enter_msg(args->arg[0], (const u8 *)args->arg[1], REC_READ);
}
// One exit program serves all eight calls: sys_exit_* all carry `long ret` at the same place.
int sockets_exit_io(struct sockets_sys_exit *args) {
    return sockets_exit(args, args->ret);
}

// connect(2) to a destination in the set: the socket is tracked once the call succeeds (or is
// under way on a non-blocking socket: EINPROGRESS).
int sockets_enter_connect(struct sockets_sys_enter *args) {
    u64 id = current_id();
    if (!id || !wanted(id >> 32))
        return 0;
    struct sockets_dest_key k = {};
    u16 family = 0;
    if (!sockets_key(&k, (const u8 *)args->arg[1], &family) || !sockets_dest.lookup(&k))
        return 0;
    u32 tid = (u32)id;
    s32 fd = (s32)args->arg[0];
    sockets_pending.update(&tid, &fd);
    return 0;
}

int sockets_exit_connect(struct sockets_sys_exit *args) {
    u64 id = current_id();
    u32 tid = (u32)id;
    s32 *pending = sockets_pending.lookup(&tid);
    if (!pending)
        return 0;
    s32 fd = *pending;
    sockets_pending.delete(&tid);
    if (args->ret == 0 || args->ret == -SOCK_EINPROGRESS)
        sockets_open(id >> 32, tid, fd, 0);
    return 0;
}

// Server side (sockets_config[0] = 1): bind(2) to an address in the set, or to the wildcard
// address on a port of the set, makes the socket a listener whose accepted connections are
// tracked. Listeners bound before the sensor started are written by user space from /proc.
static __always_inline int sockets_server_side(void) {
    u32 zero = 0;
    u32 *on = sockets_config.lookup(&zero);
    return on && *on;
}

int sockets_enter_bind(struct sockets_sys_enter *args) {
    if (!sockets_server_side())
        return 0;
    u64 id = current_id();
    if (!id || !wanted(id >> 32))
        return 0;
    struct sockets_dest_key k = {};
    u16 family = 0;
    if (!sockets_key(&k, (const u8 *)args->arg[1], &family))
        return 0;
    if (!sockets_dest.lookup(&k)) {
        // 0.0.0.0 (as ::ffff:0.0.0.0) or :: : listens on every address, so on the port's entries too
        u64 a0 = 0, a1 = 0;
        __builtin_memcpy(&a0, k.addr, 8);
        __builtin_memcpy(&a1, &k.addr[8], 8);
        int wildcard = a0 == 0 && (a1 == 0 || a1 == 0x0000ffff00000000ULL);
        u16 port = 0;
        __builtin_memcpy(&port, k.port, 2);
        if (!wildcard || !sockets_ports.lookup(&port))
            return 0;
    }
    u32 tid = (u32)id;
    s32 fd = (s32)args->arg[0];
    sockets_pending.update(&tid, &fd);
    return 0;
}

int sockets_exit_bind(struct sockets_sys_exit *args) {
    u64 id = current_id();
    u32 tid = (u32)id;
    s32 *pending = sockets_pending.lookup(&tid);
    if (!pending)
        return 0;
    struct sockets_fd_key key = {.pid = id >> 32, .fd = (u32)*pending};
    sockets_pending.delete(&tid);
    if (args->ret == 0) {
        u8 one = 1;
        sockets_listeners.update(&key, &one);
    }
    return 0;
}

static __always_inline int sockets_enter_accepting(s32 fd) {
    if (!sockets_server_side())
        return 0;
    u64 id = current_id();
    struct sockets_fd_key key = {.pid = id >> 32, .fd = (u32)fd};
    if (!id || !sockets_listeners.lookup(&key) || !wanted(id >> 32))
        return 0;
    u32 tid = (u32)id;
    sockets_pending.update(&tid, &fd);
    return 0;
}

int sockets_enter_accept(struct sockets_sys_enter *args) {
    return sockets_enter_accepting((s32)args->arg[0]);
}
int sockets_enter_accept4(struct sockets_sys_enter *args) {
    return sockets_enter_accepting((s32)args->arg[0]);
}
int sockets_exit_accept(struct sockets_sys_exit *args) {
    u64 id = current_id();
    u32 tid = (u32)id;
    if (!sockets_pending.lookup(&tid))
        return 0;
    sockets_pending.delete(&tid);
    if (args->ret >= 0)
        sockets_open(id >> 32, tid, (s32)args->ret, 1);
    return 0;
}

// close(2) ends a tracked connection (and forgets a listener).
int sockets_enter_close(struct sockets_sys_enter *args) {
    u64 id = current_id();
    if (!sockets_pid_tracks(id >> 32) && !sockets_server_side())
        return 0;
    struct sockets_fd_key key = {.pid = id >> 32, .fd = (u32)args->arg[0]};
    struct sockets_conn *conn = sockets_fds.lookup(&key);
    if (!conn) {
        if (sockets_server_side())
            sockets_listeners.delete(&key);
        return 0;
    }
    u64 cid = conn->id;
    sockets_fds.delete(&key);
    sockets_end(cid, id >> 32, (u32)id);
    return 0;
}
