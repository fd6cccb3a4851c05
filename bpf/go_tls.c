// oisp-sensor: Go crypto/tls, (*Conn).Write / (*Conn).Read / (*Conn).Close (families/go.py).
//
// Go's register ABI (amd64 from Go 1.17, arm64 from 1.18) passes the receiver and the slice
// b = (ptr, len, cap) in RAX, RBX, RCX (arm64: R0, R1, R2) and returns n in RAX (R0); the running
// goroutine's g is in R14 (R28). The entry probes sit just after the function's stack check (a
// stack growth re-runs the entry), so those registers still hold the arguments.
//
// A connection is (pid, *Conn): the *Conn takes the place of OpenSSL's SSL* in every record and
// in the shared maps. A Read can block and its goroutine wake up on another thread, so its
// arguments are kept by (pid, g) from entry to the RET probes, not by thread; at the RET the
// emission uses emit.h's per-thread call state, which is stable within one program run.
//
// Non-AI traffic costs one verdict lookup per entry (admitted()) and one go_reads lookup per
// Read return.

#if defined(__TARGET_ARCH_arm64)
#define GO_ARG1(ctx) ((ctx)->regs[0])
#define GO_ARG2(ctx) ((ctx)->regs[1])
#define GO_ARG3(ctx) ((ctx)->regs[2])
#define GO_RET1(ctx) ((ctx)->regs[0])
#define GO_G(ctx) ((ctx)->regs[28])
#else
#define GO_ARG1(ctx) ((ctx)->ax)
#define GO_ARG2(ctx) ((ctx)->bx)
#define GO_ARG3(ctx) ((ctx)->cx)
#define GO_RET1(ctx) ((ctx)->ax)
#define GO_G(ctx) ((ctx)->r14)
#endif

struct go_read_key {
    u32 pid;
    u32 pad;
    u64 g;
};

struct go_read_args {
    u64 conn;
    u64 buf;
};

// Reads in progress by goroutine; LRU so that goroutines that never return (a process killed
// mid-Read) cannot fill it.
BPF_TABLE("lru_hash", struct go_read_key, struct go_read_args, go_reads, MAX_THREADS);

// func (c *Conn) Write(b []byte) (int, error): the plaintext is all there at entry.
int probe_go_write(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    s64 len = (s64)GO_ARG3(ctx);
    if (len <= 0)
        return 0;
    if (!begin_write(GO_ARG1(ctx), GO_ARG2(ctx), (u64)len, pid, tid))
        return 0;
    return emit_call(ctx, pid, tid);
}

// func (c *Conn) Read(b []byte) (int, error): remember the connection and buffer by goroutine.
int probe_go_read_enter(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    u64 conn = GO_ARG1(ctx);
    if (!admitted(pid, conn, REC_READ))
        return 0;
    struct go_read_key key = {.pid = pid, .g = GO_G(ctx)};
    struct go_read_args args = {.conn = conn, .buf = GO_ARG2(ctx)};
    go_reads.update(&key, &args);
    return 0;
}

// At each RET of Read: n is in the first result register.
int probe_go_read_return(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    struct go_read_key key = {.pid = pid, .g = GO_G(ctx)};
    struct go_read_args *args = go_reads.lookup(&key);
    if (!args)
        return 0;
    u64 conn = args->conn, buf = args->buf;
    go_reads.delete(&key);
    // n <= 0: EOF, error, or a read that only processed handshake messages
    return finish_read(ctx, conn, buf, (s64)GO_RET1(ctx), pid, tid);
}

// func (c *Conn) Close() error: the connection is over; Go may reuse the *Conn's memory.
int probe_go_close(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    u64 conn = GO_ARG1(ctx);
    struct conn_key key = {.pid = pid, .ssl = conn};
    ignored.delete(&key);
    if (!conn_seq.lookup(&key))
        return 0;  // never carried data we captured
    conn_seq.delete(&key);
    emit_small(REC_SSL_FREE, conn, -1, pid, (u32)id);
    return 0;
}
