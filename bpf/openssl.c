// oisp-sensor: OpenSSL's (and BoringSSL's: the same C ABI) SSL_write/SSL_read family.
// Writes are captured at entry; reads at entry (arguments) and return (the count).

// SSL_write(SSL *ssl, const void *buf, int num) and
// SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written): captured at entry.
int probe_ssl_write(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    s64 num = (s64)PT_REGS_PARM3(ctx);
    if (num <= 0)
        return 0;
    if (!begin_write(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), num, pid, tid))
        return 0;
    return emit_call(ctx, pid, tid);
}

int probe_ssl_write_int(struct pt_regs *ctx) {
    // SSL_write's num is an int: sign-extend the low 32 bits.
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    s32 num = (s32)PT_REGS_PARM3(ctx);
    if (num <= 0)
        return 0;
    if (!begin_write(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), (u64)num, pid, tid))
        return 0;
    return emit_call(ctx, pid, tid);
}

// SSL_read(SSL *ssl, void *buf, int num) / SSL_read_ex(SSL *ssl, void *buf, size_t num,
// size_t *readbytes): remember the arguments; the return probe knows how much was read.
int probe_ssl_read_enter(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    begin_read(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx), id >> 32, (u32)id);
    return 0;
}

int probe_ssl_read_int_enter(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    begin_read(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0, id >> 32, (u32)id);
    return 0;
}

int probe_ssl_read_return(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    struct call_state *c = begun_read(&pid, &tid);
    if (!c)
        return 0;
    s64 n = 0;
    if (c->readbytes_ptr) {
        // SSL_read_ex returns 1 on success and stores the count.
        if ((int)PT_REGS_RC(ctx) == 1) {
            u64 got = 0;
            bpf_probe_read_user(&got, sizeof(got), (void *)c->readbytes_ptr);
            n = (s64)got;
        }
    } else {
        n = (s32)PT_REGS_RC(ctx);
    }
    return finish_read(ctx, c->ssl, c->buf, n, pid, tid);  // n <= 0: WANT_READ, close, error
}

// SSL_set_fd(SSL *ssl, int fd): lets user space map the connection to its socket address.
int probe_ssl_set_fd(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    if (!wanted(pid))
        return 0;
    emit_small(REC_SET_FD, PT_REGS_PARM1(ctx), (s32)PT_REGS_PARM2(ctx), pid, (u32)id);
    return 0;
}

// SSL_free(SSL *ssl): the connection is over; its pointer may be reused by the next one.
int probe_ssl_free(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    u64 ssl = PT_REGS_PARM1(ctx);
    struct conn_key key = {.pid = pid, .ssl = ssl};
    ignored.delete(&key);
    if (!conn_seq.lookup(&key))
        return 0;  // never carried data we captured
    conn_seq.delete(&key);
    emit_small(REC_SSL_FREE, ssl, -1, pid, (u32)id);
    return 0;
}

