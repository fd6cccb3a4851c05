// oisp-sensor: process lifecycle and socket addresses (tracepoints), for every probe family.

// connect(2): remote address of a socket, read from the caller's sockaddr (user memory).
TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    if (!wanted(pid))
        return 0;
    u16 family = 0;
    const u8 *sa = (const u8 *)args->uservaddr;
    if (bpf_probe_read_user(&family, sizeof(family), sa))
        return 0;
    if (family != 2 && family != 10)  // AF_INET, AF_INET6
        return 0;
    struct rec_hdr *h = records.ringbuf_reserve(sizeof(struct rec_hdr));
    if (!h) {
        count_lost(0);
        return 0;
    }
    fill_hdr(h, REC_CONNECT, pid, (u32)id);
    h->fd = (s32)args->fd;
    h->family = family;
    u16 port_be = 0;
    bpf_probe_read_user(&port_be, sizeof(port_be), sa + 2);
    h->aux = ((port_be & 0xff) << 8) | (port_be >> 8);
    if (family == 2)
        bpf_probe_read_user(h->addr, 4, sa + 4);
    else
        bpf_probe_read_user(h->addr, 16, sa + 8);
    records.ringbuf_submit(h, 0);
    return 0;
}

// Parent pids come from the fork tracepoint, never from task_struct (BPF rule 1). Its child pid
// is the initial namespace's: in a container, user space reads the parent from /proc instead.
TRACEPOINT_PROBE(sched, sched_process_fork) {
#if PIDNS_INO
    return 0;
#endif
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    u32 child = args->child_pid;
    if (child == 0 || pid == 0)
        return 0;
    struct rec_hdr *h = records.ringbuf_reserve(sizeof(struct rec_hdr));
    if (!h) {
        count_lost(0);
        return 0;
    }
    fill_hdr(h, REC_FORK, pid, (u32)id);
    h->aux = child;
    records.ringbuf_submit(h, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    if (!wanted(pid))
        return 0;
    struct rec_exec *r = records.ringbuf_reserve(sizeof(struct rec_exec));
    if (!r) {
        count_lost(0);
        return 0;
    }
    fill_hdr(&r->h, REC_EXEC, pid, (u32)id);
    TP_DATA_LOC_READ_STR(r->filename, filename, sizeof(r->filename));
    r->h.len = sizeof(r->filename);
    records.ringbuf_submit(r, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 pid = id >> 32;
    if (pid != (u32)id)
        return 0;  // a thread other than the leader: the process lives on
    struct rec_hdr *h = records.ringbuf_reserve(sizeof(struct rec_hdr));
    if (!h) {
        count_lost(0);
        return 0;
    }
    fill_hdr(h, REC_EXIT, pid, (u32)id);
    records.ringbuf_submit(h, 0);
    return 0;
}
