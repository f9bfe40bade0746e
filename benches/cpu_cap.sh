# Sourced by the benchmark scripts: caps a process at a share of one core
# with a CFS quota (cgroup v1 cpu controller at /sys/fs/cgroup/cpu; needs
# root), so that a relay's or a switch's knee can be found at a fraction
# of a core when one generator core cannot drive it to a whole one. The
# quota is spent per 10 ms period; once it is, the process waits for the
# next period, so latency measured under a cap is the cap's.
#
#   cpu_cap NAME PERCENT PID     # the process and its threads, now and later
#   cpu_cap_thread NAME PERCENT TID   # one thread only
#   cpu_cap_cleanup              # removes the groups made (call on exit)
CPU_CAP_GROUPS=()
# cpu_cap_into FILE NAME PERCENT ID: a quota group NAME with ID written
# to its FILE (cgroup.procs: a process; tasks: one thread).
cpu_cap_into() {
    # The benchmark's own PID in the name: two benchmarks running at once
    # (both capping a "switch") must not share one quota.
    local g=/sys/fs/cgroup/cpu/codeb-bench-$2-$$
    mkdir -p "$g"
    CPU_CAP_GROUPS+=("$g")
    echo 10000 >"$g/cpu.cfs_period_us"
    echo $(($3 * 100)) >"$g/cpu.cfs_quota_us"
    echo "$4" >"$g/$1"
}
cpu_cap() {
    cpu_cap_into cgroup.procs "$@"
    echo "$1 capped at $2% of a core (CFS quota $(($2 * 100)) µs per 10 ms)"
}
cpu_cap_thread() {
    cpu_cap_into tasks "$@"
    echo "$1 (thread $3) capped at $2% of a core (CFS quota $(($2 * 100)) µs per 10 ms)"
}
cpu_cap_cleanup() {
    local g
    for g in "${CPU_CAP_GROUPS[@]}"; do
        rmdir "$g" 2>/dev/null || true
    done
}
