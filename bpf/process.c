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

// mmap(2) of a file with PROT_EXEC: the dynamic loader mapping a library (dlopen of a libssl
// copy after exec, for instance). Discovery reads the process's maps on this record, so it is
// sent at the syscall's exit, when the mapping exists. Anonymous executable maps (JITs) are not.
BPF_HASH(exec_mmaps, u32, u8, MAX_THREADS);  // by tid: an exec mmap of a file is in progress

#define PROT_EXEC_BIT 4

TRACEPOINT_PROBE(syscalls, sys_enter_mmap) {
    if (!(args->prot & PROT_EXEC_BIT) || (s32)args->fd < 0)
        return 0;
    u64 id = current_id();
    if (!id || !wanted(id >> 32))
        return 0;
    u32 tid = (u32)id;
    u8 one = 1;
    exec_mmaps.update(&tid, &one);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_mmap) {
    u64 id = current_id();
    if (!id)
        return 0;
    u32 tid = (u32)id;
    if (!exec_mmaps.lookup(&tid))
        return 0;
    exec_mmaps.delete(&tid);
    if (args->ret < 0 && args->ret > -4096)
        return 0;  // failed
    emit_small(REC_MMAP, 0, -1, id >> 32, tid);
    return 0;
}
