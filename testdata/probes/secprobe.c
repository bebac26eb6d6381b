/* secprobe: what a container may do. Prints one "name=VERDICT" line per probe,
 * VERDICT being "ok" or the errno name the call failed with (a call made with
 * bad arguments on purpose fails with EINVAL/EFAULT/ENOENT where it is allowed,
 * and with EPERM, or ENOSYS for clone3, where a filter refuses it). Written for
 * pybuild's isolation tests (tests/runtime/test_isolation.py), which run it
 * under pybuild and under podman and compare the verdicts.
 *
 * Build: gcc -static -O2 -o secprobe secprobe.c   (glibc >= 2.32 for strerrorname_np)
 * Usage: secprobe [DIR]   (DIR: a writable directory for the device nodes, default /tmp)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static void verdict(const char *name, long result) {
    if (result < 0)
        printf("%s=%s\n", name, strerrorname_np(errno));
    else
        printf("%s=ok\n", name);
    fflush(stdout);
}

/* A call that may create a process or namespace runs in a child, so that a
 * success changes nothing in the prober. */
static void in_child(const char *name, long (*call)(void)) {
    int pipefd[2];
    if (pipe(pipefd) != 0) { verdict(name, -1); return; }
    pid_t pid = fork();
    if (pid == 0) {
        long r = call();
        int err = r < 0 ? errno : 0;
        (void)!write(pipefd[1], &err, sizeof err);
        _exit(0);
    }
    int err = EIO;
    close(pipefd[1]);
    if (pid < 0 || read(pipefd[0], &err, sizeof err) != sizeof err) err = EIO;
    close(pipefd[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    errno = err;
    verdict(name, err ? -1 : 0);
}

static long do_unshare_user(void) { return unshare(CLONE_NEWUSER); }
static long do_unshare_ns(void) { return unshare(CLONE_NEWNS); }
static long do_clone_user(void) {
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return pid;
}
static long do_clone3(void) { return syscall(SYS_clone3, NULL, 0); }

static void device(const char *dir, const char *name, mode_t type, unsigned major, unsigned minor) {
    char path[512], label[64];
    snprintf(path, sizeof path, "%s/secprobe-%s", dir, name);
    unlink(path);
    snprintf(label, sizeof label, "mknod-%s", name);
    long r = mknod(path, type | 0666, makedev(major, minor));
    verdict(label, r);
    if (r == 0) {
        snprintf(label, sizeof label, "open-%s", name);
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
        /* A driver that is missing answers ENXIO/ENODEV: the cgroup let the open through. */
        if (fd < 0 && (errno == ENXIO || errno == ENODEV)) fd = 0;
        verdict(label, fd);
        if (fd > 0) close(fd);
        unlink(path);
    }
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    verdict("getpid", syscall(SYS_getpid));
    verdict("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -4 /* user keyring */, 0));
    verdict("add_key", syscall(SYS_add_key, "user", "secprobe", "x", 1, -2 /* process keyring */));
    verdict("request_key", syscall(SYS_request_key, "user", "secprobe", NULL, 0));
    in_child("unshare-user", do_unshare_user);
    in_child("unshare-mnt", do_unshare_ns);
    in_child("clone-newuser", do_clone_user);
    in_child("clone3", do_clone3);
    {
        unsigned char params[120] = {0};
        long fd = syscall(SYS_io_uring_setup, 1, params);
        verdict("io_uring_setup", fd);
        if (fd >= 0) close((int)fd);
    }
    {
        unsigned char attr[128] = {0};
        attr[4] = sizeof attr; /* perf_event_attr.size */
        long fd = syscall(SYS_perf_event_open, attr, 0, -1, -1, 0);
        /* attr.type 0 config 0 is PERF_COUNT_HW_CPU_CYCLES: ENOENT/EOPNOTSUPP without a PMU means allowed */
        if (fd < 0 && (errno == ENOENT || errno == EOPNOTSUPP || errno == ENODEV)) fd = 0;
        verdict("perf_event_open", fd);
        if (fd > 0) close((int)fd);
    }
    verdict("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, NULL, 0));
    verdict("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
    verdict("mount", mount("none", dir, "tmpfs", 0, NULL) == 0 ? (umount(dir), 0) : -1);
    verdict("swapon", syscall(SYS_swapon, "/nonexistent-swap", 0));
    verdict("syslog", syscall(SYS_syslog, 10 /* SIZE_BUFFER */, NULL, 0));
    verdict("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    verdict("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0));
    verdict("setns", syscall(SYS_setns, 0, CLONE_NEWNET));
    verdict("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
    verdict("acct", syscall(SYS_acct, NULL));
    verdict("pivot_root", syscall(SYS_pivot_root, "/nonexistent", "/nonexistent"));
    {
        long fd = socket(AF_INET, SOCK_DGRAM, 0);
        verdict("socket-inet", fd);
        if (fd >= 0) close((int)fd);
        fd = socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
        if (fd < 0 && errno == EAFNOSUPPORT) fd = 0; /* allowed, no vsock driver */
        verdict("socket-vsock", fd);
        if (fd > 0) close((int)fd);
    }
    verdict("personality-query", syscall(SYS_personality, 0xffffffffUL));
    verdict("chroot", chroot("/"));
    device(dir, "null", S_IFCHR, 1, 3);
    device(dir, "kmsg", S_IFCHR, 1, 11);
    device(dir, "loop0", S_IFBLK, 7, 0);
    device(dir, "kvm", S_IFCHR, 10, 232);
    device(dir, "mem", S_IFCHR, 1, 1);
    return 0;
}
