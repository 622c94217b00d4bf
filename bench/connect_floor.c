/*
 * connect_floor: how late the last of N bare loopback connects starts when all N are
 * planned for the same instant. The floor under spikewatch's spike start lateness.
 *
 *   cc -O2 -o connect_floor bench/connect_floor.c
 *   ./connect_floor N P
 *
 * The parent listens on 127.0.0.1 (a free port, backlog 4096; past 4096 connections, on
 * ceil(N / backlog) ports, which the connects take in turn) and never accepts: the
 * kernel completes each handshake into the accept queues. It plans one instant 50 ms
 * ahead on CLOCK_MONOTONIC and forks P children. Each child busy-waits for the instant,
 * then for each of its share of the N connections stamps CLOCK_MONOTONIC (the actual
 * start, as spikewatch stamps before create_connection) and calls
 * socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK) and connect() (EINPROGRESS is fine; any
 * other error ends the child with status 1 and the errno text). After its last connect
 * it stamps again, then, untimed, waits for every handshake to complete and checks
 * SO_ERROR; it sends its stamps to the parent through a pipe and closes its sockets with
 * an RST (SO_LINGER 0, so no TIME_WAIT is left to use up ports).
 *
 * The parent prints one JSON line: lateness (stamp - planned instant) p50/p99/max over
 * all N stamps, in seconds, interpolated as spikewatch's percentile() does (numpy's
 * "linear"); the time from the instant until the last connect returned; how many
 * handshakes completed; and, per child, how long before the instant it was ready
 * (negative: it missed the instant, and the figures are not a floor).
 *
 * Bounded: N <= 10000, P <= 16, N no larger than MAX_LISTENERS times the listen backlog
 * (4096, capped by /proc/sys/net/core/somaxconn): past it the kernel drops SYNs and
 * connect() would be cheaper than a real handshake. Exit status 2 for refused arguments, 1 for a failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_N 10000
#define MAX_LISTENERS 4
#define MAX_P 16
#define BACKLOG 4096
#define LEAD_NS 50000000LL             /* the planned instant, this far ahead */
#define ESTABLISH_TIMEOUT_MS 5000      /* waiting for the handshakes (untimed) */
#define FD_MARGIN 16

/* What a child sends to the parent before its stamps. */
struct header {
    int64_t count;       /* stamps that follow */
    int64_t ready_ns;    /* when it began to wait for the instant */
    int64_t done_ns;     /* when its last connect returned */
    int64_t established; /* handshakes completed, SO_ERROR 0 */
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Read exactly len bytes; 0 on success, -1 on error or early EOF. */
static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of ascending v[0..n-1], as spikewatch.core.stats.percentile. */
static double percentile(const int64_t *v, size_t n, double q) {
    double position = (double)(n - 1) * q;
    size_t lower = (size_t)position;
    double fraction = position - (double)lower;
    double low = (double)v[lower];
    if (fraction == 0.0)
        return low;
    double high = (double)v[lower + 1];
    if (fraction < 0.5)
        return low + (high - low) * fraction;
    return high - (high - low) * (1.0 - fraction);
}

static int effective_backlog(void) {
    int somaxconn = BACKLOG;
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
    if (f != NULL) {
        if (fscanf(f, "%d", &somaxconn) != 1)
            somaxconn = BACKLOG;
        fclose(f);
    }
    return somaxconn < BACKLOG ? somaxconn : BACKLOG;
}

/* One child: wait for the instant, connect `count` times, report through `out`. */
static int child(int out, const struct sockaddr_in *addrs, int listeners, int count,
                 int64_t planned) {
    int64_t *stamps = calloc((size_t)count, sizeof *stamps);
    int *fds = calloc((size_t)count, sizeof *fds);
    struct pollfd *polls = calloc((size_t)count, sizeof *polls);
    if (stamps == NULL || fds == NULL || polls == NULL) {
        fprintf(stderr, "connect_floor: out of memory\n");
        return 1;
    }
    for (int i = 0; i < count; i++)
        fds[i] = -1;
    struct header h = {.count = count, .ready_ns = now_ns()};
    while (now_ns() < planned) {
        /* busy-wait: a sleep would add the scheduler's wake-up latency */
    }
    int status = 0;
    int done = 0;
    for (; done < count; done++) {
        stamps[done] = now_ns();
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            fprintf(stderr, "connect_floor: socket: %s\n", strerror(errno));
            status = 1;
            break;
        }
        fds[done] = fd;
        const struct sockaddr_in *addr = &addrs[done % listeners];
        if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0 &&
            errno != EINPROGRESS) {
            fprintf(stderr, "connect_floor: connect: %s\n", strerror(errno));
            status = 1;
            done++;
            break;
        }
    }
    h.done_ns = now_ns();
    if (status == 0) {
        /* Untimed: every handshake must complete, else the connects were not real ones. */
        for (int i = 0; i < count; i++)
            polls[i] = (struct pollfd){.fd = fds[i], .events = POLLOUT};
        int64_t deadline = now_ns() + ESTABLISH_TIMEOUT_MS * 1000000LL;
        int pending = count;
        while (pending > 0) {
            int64_t left_ms = (deadline - now_ns()) / 1000000LL;
            if (left_ms <= 0)
                break;
            int ready = poll(polls, (nfds_t)count, (int)left_ms);
            if (ready < 0 && errno != EINTR) {
                fprintf(stderr, "connect_floor: poll: %s\n", strerror(errno));
                status = 1;
                break;
            }
            for (int i = 0; i < count; i++) {
                if (polls[i].fd < 0 || polls[i].revents == 0)
                    continue;
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 &&
                    (polls[i].revents & (POLLERR | POLLHUP)) == 0)
                    h.established++;
                polls[i].fd = -1; /* poll() ignores negative fds */
                pending--;
            }
        }
        if (status == 0 &&
            (write_all(out, &h, sizeof h) < 0 ||
             write_all(out, stamps, (size_t)count * sizeof *stamps) < 0)) {
            fprintf(stderr, "connect_floor: write to the parent: %s\n", strerror(errno));
            status = 1;
        }
    }
    struct linger rst = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < done; i++) {
        if (fds[i] >= 0) {
            setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
            close(fds[i]);
        }
    }
    close(out);
    free(stamps);
    free(fds);
    free(polls);
    return status;
}

static int parse_int(const char *text, int *value) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 0 || v > 1000000)
        return -1;
    *value = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    int n, p;
    if (argc != 3 || parse_int(argv[1], &n) < 0 || parse_int(argv[2], &p) < 0) {
        fprintf(stderr, "usage: connect_floor N P (1 <= N <= %d, 1 <= P <= %d)\n", MAX_N, MAX_P);
        return 2;
    }
    if (n < 1 || n > MAX_N || p < 1 || p > MAX_P || p > n) {
        fprintf(stderr,
                "connect_floor: refused: N=%d, P=%d; need 1 <= N <= %d, 1 <= P <= %d, P <= N\n",
                n, p, MAX_N, MAX_P);
        return 2;
    }
    int backlog = effective_backlog();
    if (n > backlog * MAX_LISTENERS) {
        fprintf(stderr,
                "connect_floor: refused: N=%d exceeds the listen backlog %d (min(%d, "
                "net.core.somaxconn)) times %d listeners; past it the kernel drops SYNs "
                "instead of completing handshakes\n",
                n, backlog, BACKLOG, MAX_LISTENERS);
        return 2;
    }
    int listeners = (n + backlog - 1) / backlog;
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    int share_max = (n + p - 1) / p;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && (rlim_t)(share_max + FD_MARGIN) > lim.rlim_cur) {
        fprintf(stderr, "connect_floor: refused: %d connections per process need more than %lu fds\n",
                share_max, (unsigned long)lim.rlim_cur);
        return 2;
    }

    int listener[MAX_LISTENERS];
    struct sockaddr_in addrs[MAX_LISTENERS];
    for (int l = 0; l < listeners; l++) {
        listener[l] = socket(AF_INET, SOCK_STREAM, 0);
        if (listener[l] < 0) {
            fprintf(stderr, "connect_floor: socket: %s\n", strerror(errno));
            return 1;
        }
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t addr_len = sizeof addr;
        if (bind(listener[l], (struct sockaddr *)&addr, sizeof addr) < 0 ||
            listen(listener[l], BACKLOG) < 0 ||
            getsockname(listener[l], (struct sockaddr *)&addr, &addr_len) < 0) {
            fprintf(stderr, "connect_floor: listener on 127.0.0.1: %s\n", strerror(errno));
            close(listener[l]);
            return 1;
        }
        addrs[l] = addr;
    }

    int64_t set_at = now_ns();
    int64_t planned = set_at + LEAD_NS;
    pid_t pids[MAX_P];
    int pipes[MAX_P];
    int counts[MAX_P];
    int forked = 0;
    int status = 0;
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < p; i++) {
        counts[i] = n / p + (i < n % p ? 1 : 0);
        int fd[2];
        if (pipe(fd) < 0) {
            fprintf(stderr, "connect_floor: pipe: %s\n", strerror(errno));
            status = 1;
            break;
        }
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "connect_floor: fork: %s\n", strerror(errno));
            close(fd[0]);
            close(fd[1]);
            status = 1;
            break;
        }
        if (pid == 0) {
            close(fd[0]);
            for (int l = 0; l < listeners; l++)
                close(listener[l]);
            for (int j = 0; j < forked; j++)
                close(pipes[j]);
            _exit(child(fd[1], addrs, listeners, counts[i], planned));
        }
        close(fd[1]);
        pids[forked] = pid;
        pipes[forked] = fd[0];
        forked++;
    }

    int64_t *lateness = calloc((size_t)n, sizeof *lateness);
    int64_t ready_margin[MAX_P];
    int64_t last_done = planned;
    int64_t established = 0;
    size_t got = 0;
    if (lateness == NULL) {
        fprintf(stderr, "connect_floor: out of memory\n");
        status = 1;
    }
    for (int i = 0; i < forked; i++) {
        struct header h;
        if (status == 0 && read_all(pipes[i], &h, sizeof h) == 0 && h.count == counts[i] &&
            got + (size_t)h.count <= (size_t)n &&
            read_all(pipes[i], lateness + got, (size_t)h.count * sizeof *lateness) == 0) {
            for (int64_t k = 0; k < h.count; k++)
                lateness[got + (size_t)k] -= planned;
            got += (size_t)h.count;
            ready_margin[i] = planned - h.ready_ns;
            if (h.done_ns > last_done)
                last_done = h.done_ns;
            established += h.established;
        } else if (status == 0) {
            status = 1; /* the child's own message, if any, is on stderr */
        }
        close(pipes[i]);
    }
    for (int i = 0; i < forked; i++) {
        int child_status;
        while (waitpid(pids[i], &child_status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(child_status) || WEXITSTATUS(child_status) != 0) {
            fprintf(stderr, "connect_floor: child %d (%d connections) failed\n", i, counts[i]);
            status = 1;
        }
    }
    for (int l = 0; l < listeners; l++)
        close(listener[l]); /* the queued, never-accepted connections are reset */
    if (status == 0 && got != (size_t)n) {
        fprintf(stderr, "connect_floor: %zu stamps for %d connections\n", got, n);
        status = 1;
    }
    if (status == 0) {
        qsort(lateness, (size_t)n, sizeof *lateness, cmp_i64);
        printf("{\"impl\": \"c\", \"n\": %d, \"processes\": %d, \"backlog\": %d, "
               "\"lead_seconds\": %.9f, \"ready_margin_seconds\": [",
               n, p, backlog, (double)(planned - set_at) / 1e9);
        for (int i = 0; i < forked; i++)
            printf("%s%.9f", i ? ", " : "", (double)ready_margin[i] / 1e9);
        printf("], \"lateness_seconds\": {\"min\": %.9f, \"p50\": %.9f, \"p99\": %.9f, "
               "\"max\": %.9f}, \"last_connect_seconds\": %.9f, \"established\": %lld}\n",
               (double)lateness[0] / 1e9, percentile(lateness, (size_t)n, 0.5) / 1e9,
               percentile(lateness, (size_t)n, 0.99) / 1e9, (double)lateness[n - 1] / 1e9,
               (double)(last_done - planned) / 1e9, (long long)established);
    }
    free(lateness);
    return status;
}
