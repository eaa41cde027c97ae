/*
 * openshell-init: PID 1 of the agent's PID namespace (ARCHITECTURE.md 3.4).
 *
 * The supervisor forks a child that joins the sandbox's namespaces, drops every privilege,
 * loads the agent's seccomp filter and then execs this program with an empty environment
 * and argv {"openshell-init"}, so nothing of the supervisor (its environment block, argv
 * or heap) survives in PID 1. Its only inputs are two file descriptors:
 *
 *   fd 3  the launch spec (a memfd): "<argc> <envc>\n" then argc + envc NUL-terminated
 *         strings; the first argument string is the path to execute, the others are argv
 *         (argv[0] included), then the agent's environment.
 *   fd 4  the status pipe to the supervisor: JSON lines (supervisor/sandbox/protocol.py)
 *           {"kind":"exec","code":126|127,"errno":N}   the agent could not be executed
 *           {"kind":"exit","status":N}                  raw wait status of the agent
 *
 * It forks and execs the agent, forwards the supervisor's signals to it, reaps every
 * orphan of the namespace, and exits with the agent's code (128+N for death by signal N:
 * a namespace init cannot die of a signal it sends itself). Exec failures exit 127 (not
 * found) or 126 (not executable), like a shell. Statically linked: nothing to load.
 *
 * Installed mode 0711: the agent's uid may execute but not read it, so the kernel makes the
 * exec non-dumpable itself; the prctl below only covers a copy installed readable. Else,
 * until that prctl, a process of the agent's uid could read or trace PID 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SPEC_FD 3
#define STATUS_FD 4
#define EXIT_SETUP 125
#define EXIT_NOT_EXECUTABLE 126
#define EXIT_NOT_FOUND 127
#define MAX_SPEC (64u << 20)

/* The signals the supervisor forwards (protocol.FORWARDED_SIGNALS). */
static const int forwarded[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

static void report(const char *line) {
    size_t len = strlen(line);
    while (len > 0) {
        ssize_t n = write(STATUS_FD, line, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the supervisor is gone: nothing left to tell */
        line += n;
        len -= (size_t)n;
    }
}

static char *read_spec(size_t *size) {
    struct stat st;
    if (fstat(SPEC_FD, &st) != 0 || st.st_size <= 0 || (size_t)st.st_size > MAX_SPEC)
        return NULL;
    char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        return NULL;
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(SPEC_FD, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return NULL;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *size = got;
    return buf;
}

/* A count: 1 to 9 decimal digits, no sign or space (so it cannot overflow), then `stop`. */
static int parse_count(const char **p, char stop, unsigned long *out) {
    const char *s = *p;
    unsigned long value = 0;
    int digits = 0;
    while (*s >= '0' && *s <= '9' && digits < 9) {
        value = value * 10 + (unsigned long)(*s - '0');
        s++;
        digits++;
    }
    if (digits == 0 || *s != stop)
        return -1;
    *p = s + 1;
    *out = value;
    return 0;
}

/* Split the spec into path, argv and envp (NULL-terminated arrays pointing into buf).
 * Strict: exactly "<argc> <envc>\n" and then exactly argc + envc NUL-terminated strings. */
static int parse_spec(char *buf, size_t size, char **path, char ***argv, char ***envp) {
    char *end = buf + size;
    const char *h = buf; /* buf[size] is a NUL: the header parse stops there at the latest */
    unsigned long argc, envc;
    if (parse_count(&h, ' ', &argc) != 0 || parse_count(&h, '\n', &envc) != 0 || argc < 2)
        return -1;
    char *p = buf + (h - buf);
    /* Every string takes at least its NUL: never allocate for more than the spec holds. */
    if (argc + envc > (size_t)(end - p))
        return -1;
    char **strings = calloc(argc + envc + 2, sizeof(char *));
    if (strings == NULL)
        return -1;
    for (unsigned long i = 0; i < argc + envc; i++) {
        char *nul = p < end ? memchr(p, '\0', (size_t)(end - p)) : NULL;
        if (nul == NULL) {
            free(strings);
            return -1;
        }
        strings[i + (i >= argc ? 1 : 0)] = p; /* a NULL slot ends argv */
        p = nul + 1;
    }
    if (p != end) { /* bytes after the last string: not a spec our child wrote */
        free(strings);
        return -1;
    }
    *path = strings[0];
    *argv = strings + 1;
    *envp = strings + argc + 1;
    return 0;
}

static void default_signals(void) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* The supervisor (Python) ignores SIGPIPE and SIGXFSZ; an ignored disposition would
     * survive exec into the agent. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
}

static void exec_agent(const char *path, char **argv, char **envp, int err_fd) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execve(path, argv, envp);
    int err = errno;
    ssize_t ignored = write(err_fd, &err, sizeof err);
    (void)ignored;
    _exit(err == ENOENT || err == ENOTDIR ? EXIT_NOT_FOUND : EXIT_NOT_EXECUTABLE);
}

static int is_forwarded(int sig) {
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        if (forwarded[i] == sig)
            return 1;
    return 0;
}

static int exit_code_of(int status) {
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

int main(void) {
    /* Execve made us dumpable again: the agent (same uid) must not read or write our memory
     * through /proc/1/mem or ptrace. */
    prctl(PR_SET_DUMPABLE, 0);
    default_signals();
    sigset_t all;
    sigfillset(&all);
    /* Every signal stays pending until sigwaitinfo below: blocked signals are never
     * discarded, even for a namespace init without handlers. */
    sigprocmask(SIG_SETMASK, &all, NULL);

    size_t size = 0;
    char *spec = read_spec(&size);
    char *path, **argv, **envp;
    if (spec == NULL || parse_spec(spec, size, &path, &argv, &envp) != 0) {
        report("{\"kind\":\"setup\",\"step\":\"init\",\"reason\":\"unreadable launch spec\"}\n");
        return EXIT_SETUP;
    }
    close(SPEC_FD);

    int err_pipe[2];
    if (pipe2(err_pipe, O_CLOEXEC) != 0) {
        report("{\"kind\":\"setup\",\"step\":\"init\",\"reason\":\"pipe failed\"}\n");
        return EXIT_SETUP;
    }
    int flags = fcntl(STATUS_FD, F_GETFD);
    if (flags >= 0)
        fcntl(STATUS_FD, F_SETFD, flags | FD_CLOEXEC);

    pid_t agent = fork();
    if (agent < 0) {
        report("{\"kind\":\"setup\",\"step\":\"init\",\"reason\":\"fork failed\"}\n");
        return EXIT_SETUP;
    }
    if (agent == 0) {
        close(err_pipe[0]);
        exec_agent(path, argv, envp, err_pipe[1]);
    }
    close(err_pipe[1]);
    int exec_errno = 0;
    ssize_t n;
    do
        n = read(err_pipe[0], &exec_errno, sizeof exec_errno);
    while (n < 0 && errno == EINTR);
    close(err_pipe[0]);
    char line[96];
    if (n == (ssize_t)sizeof exec_errno) {
        int code = exec_errno == ENOENT || exec_errno == ENOTDIR ? EXIT_NOT_FOUND
                                                                 : EXIT_NOT_EXECUTABLE;
        waitpid(agent, NULL, 0);
        snprintf(line, sizeof line, "{\"kind\":\"exec\",\"code\":%d,\"errno\":%d}\n", code,
                 exec_errno);
        report(line);
        return code;
    }

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&all, &info);
        if (sig < 0)
            continue; /* EINTR */
        if (sig == SIGCHLD) {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (pid == agent) {
                    snprintf(line, sizeof line, "{\"kind\":\"exit\",\"status\":%d}\n", status);
                    report(line);
                    return exit_code_of(status);
                }
            }
        } else if (is_forwarded(sig)) {
            kill(agent, sig);
        }
    }
}
