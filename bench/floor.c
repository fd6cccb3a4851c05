// The floor for bench/tls_overhead.py: the sensor's probe points with empty programs, i.e. the
// cost of the uprobe traps and tracepoints alone. Function names match bpf/tls_capture.c so the
// same attachment table (oisp_daemon/capture/libraries.py) applies.
#include <uapi/linux/ptrace.h>

int probe_ssl_write(struct pt_regs *ctx) { return 0; }
int probe_ssl_write_int(struct pt_regs *ctx) { return 0; }
int probe_ssl_read_enter(struct pt_regs *ctx) { return 0; }
int probe_ssl_read_int_enter(struct pt_regs *ctx) { return 0; }
int probe_ssl_read_return(struct pt_regs *ctx) { return 0; }
int probe_ssl_set_fd(struct pt_regs *ctx) { return 0; }
int probe_ssl_free(struct pt_regs *ctx) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_connect) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_fork) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exec) { return 0; }
TRACEPOINT_PROBE(sched, sched_process_exit) { return 0; }
