// oisp-sensor: rustls on aws-lc (Codex and other static Rust binaries), probed at aws-lc's AEAD
// calls, the one place below rustls where a TLS 1.3 record's plaintext is in a flat buffer:
//   int EVP_AEAD_CTX_seal(ctx, out, *out_len, max_out_len, nonce, nonce_len, in, in_len, ad, ad_len)
//   int EVP_AEAD_CTX_open(ctx, out, *out_len, max_out_len, nonce, nonce_len, in, in_len, ad, ad_len)
//   int EVP_AEAD_CTX_init_with_direction(ctx, aead, key, key_len, tag_len, dir)  (and _init)
// Arguments 7-10 are on the stack (x86-64 SysV: [sp+8] .. [sp+32] at entry).
//
// A record is TLS 1.3 application data when its additional data is the 5-byte record header
// 17 03 03 LL LL and the last non-zero byte of its inner plaintext (the content type) is 0x17;
// everything else (handshake, alerts, other users of aws-lc) is left alone. Each direction has
// its own AEAD context, so the two are paired into one connection: rustls installs a client's
// application keys right after it seals its Finished, read key first, then write key, both on
// the thread that ran the handshake; a KeyUpdate replaces one key the same way. The connection's
// id (rec_hdr.ssl) is its read context's address. Application data sealed with a context that
// was never paired is counted as lost, never guessed; records opened with one are not looked at
// (before decryption they cannot be told from handshake records).

#define RUSTLS_AD_LEN 5
#define RUSTLS_CT_HANDSHAKE 0x16
#define RUSTLS_CT_APP_DATA 0x17
#define RUSTLS_HS_FINISHED 0x14
#define RUSTLS_HS_KEY_UPDATE 0x18
#define RUSTLS_TAIL 16  // trailing bytes searched for the content type (TLS 1.3 zero padding)

struct rustls_ctx_key {
    u32 pid;
    u32 pad;
    u64 aead_ctx;
};

// Keys the thread is about to install: `left` inits to map to `conn` (0: a new connection,
// whose id becomes the first of them).
struct rustls_pending {
    u64 conn;
    u32 left;
    u32 pad;
};

BPF_TABLE("lru_hash", struct rustls_ctx_key, u64, rustls_conns, MAX_CONNECTIONS);  // ctx -> conn
BPF_TABLE("lru_hash", u32, struct rustls_pending, rustls_next, MAX_THREADS);      // by tid

static __always_inline u64 rustls_conn_of(u32 pid, u64 aead_ctx) {
    struct rustls_ctx_key key = {.pid = pid, .aead_ctx = aead_ctx};
    u64 *conn = rustls_conns.lookup(&key);
    return conn ? *conn : 0;
}

// Arguments 7-10 of a seal/open call: in, in_len, ad, ad_len. True when ad is a TLS 1.3
// application-data record header (every encrypted TLS 1.3 record has that outer type).
static __always_inline int rustls_tls13_record(struct pt_regs *ctx, u64 *in, u64 *in_len) {
    u64 args[4] = {};
    if (bpf_probe_read_user(args, sizeof(args), (void *)(PT_REGS_SP(ctx) + 8)))
        return 0;
    if (args[3] != RUSTLS_AD_LEN)
        return 0;
    u8 ad[3] = {};
    if (bpf_probe_read_user(ad, sizeof(ad), (void *)args[2]))
        return 0;
    if (ad[0] != RUSTLS_CT_APP_DATA || ad[1] != 3 || ad[2] != 3)
        return 0;
    *in = args[0];
    *in_len = args[1];
    return 1;
}

static __always_inline void rustls_expect_keys(u32 tid, u64 conn, u32 count) {
    struct rustls_pending p = {.conn = conn, .left = count};
    rustls_next.update(&tid, &p);
}

// EVP_AEAD_CTX_init*(ctx, ...): a new key in `ctx`. Whatever the memory held before is gone;
// if the thread is installing a connection's keys, this is one of them.
int rustls_aead_init(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    u64 aead_ctx = PT_REGS_PARM1(ctx);
    struct rustls_ctx_key key = {.pid = pid, .aead_ctx = aead_ctx};
    rustls_conns.delete(&key);
    struct rustls_pending *p = rustls_next.lookup(&tid);
    if (!p)
        return 0;
    u64 conn = p->conn;
    if (!conn) {
        // A new connection takes this address as its id: a previous one that had it is over.
        conn = aead_ctx;
        struct conn_key old = {.pid = pid, .ssl = conn};
        ignored.delete(&old);
        if (conn_seq.lookup(&old)) {
            conn_seq.delete(&old);
            emit_small(REC_SSL_FREE, conn, -1, pid, tid);
        }
        p->conn = conn;
    }
    rustls_conns.update(&key, &conn);
    if (p->left <= 1)
        rustls_next.delete(&tid);
    else
        p->left -= 1;
    return 0;
}

// EVP_AEAD_CTX_seal: the record's plaintext is `in` at entry (content type in its last byte;
// rustls does not pad).
int rustls_aead_seal(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    u64 in = 0, in_len = 0;
    if (!rustls_tls13_record(ctx, &in, &in_len) || in_len < 2)
        return 0;
    u8 type = 0;
    if (bpf_probe_read_user(&type, 1, (void *)(in + in_len - 1)))
        return 0;
    u64 conn = rustls_conn_of(pid, PT_REGS_PARM1(ctx));
    if (type == RUSTLS_CT_HANDSHAKE) {
        u8 msg = 0;
        bpf_probe_read_user(&msg, 1, (void *)in);
        if (msg == RUSTLS_HS_FINISHED && !conn)
            rustls_expect_keys(tid, 0, 2);  // the application read and write keys follow
        else if (msg == RUSTLS_HS_KEY_UPDATE && conn)
            rustls_expect_keys(tid, conn, 1);  // our new write key follows
        return 0;
    }
    if (type != RUSTLS_CT_APP_DATA)
        return 0;
    if (!conn) {
        if (wanted(pid))
            count_lost(in_len - 1);  // application data on keys we could not pair
        return 0;
    }
    if (!begin_write(conn, in, in_len - 1, pid, tid))
        return 0;
    return emit_call(ctx, pid, tid);
}

// EVP_AEAD_CTX_open: remember where the plaintext goes; the return probe knows its length.
int rustls_aead_open_enter(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    u64 conn = rustls_conn_of(pid, PT_REGS_PARM1(ctx));
    if (!conn)
        return 0;  // handshake keys, or another user of aws-lc
    u64 in = 0, in_len = 0;
    if (!rustls_tls13_record(ctx, &in, &in_len))
        return 0;
    begin_read(conn, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx), pid, tid);
    return 0;
}

int rustls_aead_open_return(struct pt_regs *ctx) {
    u32 pid = 0, tid = 0;
    struct call_state *c = begun_read(&pid, &tid);
    if (!c)
        return 0;
    u64 n = 0;
    if ((int)PT_REGS_RC(ctx) != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)c->readbytes_ptr) || n == 0) {
        calls.delete(&tid);  // authentication failed, or an empty record
        return 0;
    }
    // The content type is the last non-zero byte; what follows it is padding.
    u8 tail[RUSTLS_TAIL] = {};
    u64 k = n < RUSTLS_TAIL ? n : RUSTLS_TAIL;
    if (bpf_probe_read_user(tail, k & (RUSTLS_TAIL * 2 - 1), (void *)(c->buf + n - k))) {
        count_lost(n);
        calls.delete(&tid);
        return 0;
    }
    u8 type = 0;
    u64 inner = 0;  // bytes before the content type
#pragma unroll
    for (int i = RUSTLS_TAIL - 1; i >= 0; i--) {
        if (!type && i < k && tail[i]) {
            type = tail[i];
            inner = n - k + i;
        }
    }
    if (type == RUSTLS_CT_HANDSHAKE) {
        u8 msg = 0;
        bpf_probe_read_user(&msg, 1, (void *)c->buf);
        if (msg == RUSTLS_HS_KEY_UPDATE)
            rustls_expect_keys(tid, c->ssl, 1);  // the peer's new key: our new read key follows
        calls.delete(&tid);
        return 0;
    }
    if (type != RUSTLS_CT_APP_DATA || inner == 0) {
        if (!type)
            count_lost(n);  // more padding than we look at: the type is out of reach
        calls.delete(&tid);
        return 0;
    }
    return finish_read(ctx, c->ssl, c->buf, (s64)inner, pid, tid);
}
