// oisp-sensor: NSS through NSPR's PR_Write/PR_Send and PR_Read/PR_Recv (fd, buf, amount, ...).
// These serve every NSPR descriptor. NSS's SSL layer is pushed on top of the socket, so only a
// descriptor whose top layer is PR_DESC_LAYERED is a candidate: a file or a bare socket costs
// the trap and two user-memory reads. Reads return through probe_ssl_read_return (openssl.c).

#define PR_DESC_LAYERED 4

// PRFileDesc { const PRIOMethods *methods; ... } and PRIOMethods { PRDescType file_type; ... }.
static __always_inline int nss_layered(u64 fd) {
    u64 methods = 0;
    s32 file_type = 0;
    if (bpf_probe_read_user(&methods, sizeof(methods), (void *)fd) || !methods)
        return 0;
    if (bpf_probe_read_user(&file_type, sizeof(file_type), (void *)methods))
        return 0;
    return file_type == PR_DESC_LAYERED;
}

int probe_nss_write(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32, tid = (u32)id;
    s32 num = (s32)PT_REGS_PARM3(ctx);
    u64 fd = PT_REGS_PARM1(ctx);
    if (num <= 0 || !nss_layered(fd))
        return 0;
    if (!begin_write(fd, PT_REGS_PARM2(ctx), (u64)num, pid, tid))
        return 0;
    return emit_call(ctx, pid, tid);
}

int probe_nss_read_enter(struct pt_regs *ctx) {
    u64 id = current_id();
    if (!id)
        return 0;
    u64 fd = PT_REGS_PARM1(ctx);
    if (!nss_layered(fd))
        return 0;
    begin_read(fd, PT_REGS_PARM2(ctx), 0, id >> 32, (u32)id);
    return 0;
}
