// An open-loop latency check for a NATS server on loopback, written apart from courier-bench
// (plain C, blocking sockets, its own parser), to check courier-bench's figures against.
//
//   cc -O2 -pthread openloop-check.c -o openloop-check
//   taskset -c 1 ./openloop-check <port> <msgs/s> <size> <seconds> <tick_us> <poll|sleep|spin> [warmup_s]
//
// One publisher on subject bench.ol, one subscriber. Each message carries its scheduled send
// time (CLOCK_MONOTONIC ns, first 8 payload bytes); latency is receive time minus scheduled
// time, so a late publisher counts against the figures (no coordinated omission). The publisher
// writes, at most every tick_us, every message that has come due. Modes:
//   poll   one thread: the publisher spins on the clock and reads the subscriber's socket
//          without blocking in between (no wake-ups on the load side)
//   sleep  publisher thread sleeping to each tick (clock_nanosleep, 1 ns timer slack),
//          subscriber thread blocking in read
//   spin   publisher thread spinning to each tick, subscriber thread blocking in read
// Prints the latency percentiles and how late the publisher wrote each batch's first message.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int port, size, tick_us, spin, pollmode, g_sfd;
static size_t s_cap = 1 << 20, s_have = 0; static char *s_buf; static int64_t s_got = 0;
static void drain(int fd, int block);
static double rate, seconds, warmup;
static int64_t start_ns, count, warm_count;
static int64_t *lat;
static int64_t *late;
static int64_t nlate;

static void die(const char *m) { perror(m); exit(1); }

static void wr(int fd, const char *b, size_t n) {
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k <= 0) die("write");
        b += k;
        n -= (size_t)k;
    }
}

static int dial(const char *sub) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[4096];
    if (read(fd, buf, sizeof buf) <= 0) die("info");
    char hello[512];
    snprintf(hello, sizeof hello, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n%sPING\r\n", sub);
    wr(fd, hello, strlen(hello));
    int got = 0;
    while (1) {
        ssize_t k = read(fd, buf + got, sizeof buf - 1 - got);
        if (k <= 0) die("pong");
        got += k;
        buf[got] = 0;
        if (strstr(buf, "PONG\r\n")) break;
    }
    return fd;
}

static void drain(int fd, int block) {
    char *buf = s_buf;
    size_t cap = s_cap;
    ssize_t k = recv(fd, buf + s_have, cap - s_have, block ? 0 : MSG_DONTWAIT);
    if (k == 0) die("sub eof");
    if (k < 0) { if (block) die("sub read"); return; }
    int64_t t = now_ns();
    s_have += (size_t)k;
    size_t have = s_have;
    size_t p = 0;
    while (1) {
        char *nl = memchr(buf + p, '\n', have - p);
        if (!nl) break;
        size_t line_end = (size_t)(nl - buf) + 1;
        if (have - p >= 4 && memcmp(buf + p, "MSG ", 4) == 0) {
            char *q = nl - 1;
            while (q > buf + p && q[-1] != ' ') q--;
            long n = strtol(q, NULL, 10);
            if (have < line_end + (size_t)n + 2) break;
            int64_t ts;
            memcpy(&ts, buf + line_end, 8);
            int64_t seq = (ts - start_ns) * rate / 1e9 + 0.5;
            if (s_got < count) lat[s_got++] = seq >= warm_count ? t - ts : -1;
            p = line_end + (size_t)n + 2;
        } else if (have - p >= 4 && memcmp(buf + p, "PING", 4) == 0) {
            wr(fd, "PONG\r\n", 6);
            p = line_end;
        } else {
            p = line_end;
        }
    }
    memmove(buf, buf + p, have - p);
    s_have = have - p;
}

static void *subscriber(void *arg) {
    int fd = *(int *)arg;
    while (s_got < count) drain(fd, 1);
    return NULL;
}

static void wait_until(int64_t t) {
    if (pollmode) {
        while (now_ns() < t) drain(g_sfd, 0);
        return;
    }
    if (spin) {
        while (now_ns() < t) {
        }
        return;
    }
    struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void *publisher(void *arg) {
    int fd = *(int *)arg;
    prctl(PR_SET_TIMERSLACK, 1);
    char head[64];
    int hl = snprintf(head, sizeof head, "PUB bench.ol %d\r\n", size);
    size_t one = (size_t)hl + (size_t)size + 2;
    size_t cap = one * 100000;
    char *buf = calloc(1, cap);
    double iv = 1e9 / rate;
    int64_t seq = 0, tick = 0;
    while (seq < count) {
        int64_t next = start_ns + (int64_t)(seq * iv);
        int64_t tk = start_ns + tick * (int64_t)tick_us * 1000;
        wait_until(next > tk ? next : tk);
        int64_t t = now_ns();
        tick = (t - start_ns) / ((int64_t)tick_us * 1000) + 1;
        int64_t due = (int64_t)((t - start_ns) / iv) + 1;
        if (due > count) due = count;
        size_t len = 0;
        int64_t first = seq;
        while (seq < due && len + one <= cap) {
            memcpy(buf + len, head, (size_t)hl);
            int64_t ts = start_ns + (int64_t)(seq * iv);
            memcpy(buf + len + hl, &ts, 8);
            memcpy(buf + len + hl + size, "\r\n", 2);
            len += one;
            seq++;
        }
        wr(fd, buf, len);
        if (first >= warm_count && nlate < count) late[nlate++] = t - (start_ns + (int64_t)(first * iv));
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, int64_t *v, int64_t n) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (v[i] >= 0) v[m++] = v[i];
    qsort(v, (size_t)m, 8, cmp);
    if (!m) return;
#define Q(q) (v[(int64_t)((m - 1) * (q))] / 1000.0)
    printf("%s n=%ld p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f p99.99 %.1f max %.1f us\n", what, (long)m, Q(0.5), Q(0.9),
           Q(0.99), Q(0.999), Q(0.9999), v[m - 1] / 1000.0);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: openloop-check port msgs/s size seconds tick_us poll|sleep|spin [warmup_s]\n");
        return 2;
    }
    port = atoi(argv[1]);
    rate = atof(argv[2]);
    size = atoi(argv[3]);
    seconds = atof(argv[4]);
    tick_us = atoi(argv[5]);
    spin = strcmp(argv[6], "spin") == 0;
    pollmode = strcmp(argv[6], "poll") == 0;
    s_buf = malloc(s_cap);
    warmup = argc > 7 ? atof(argv[7]) : 0;
    if (size < 8 || tick_us < 1) return 2;
    count = (int64_t)(rate * seconds);
    warm_count = (int64_t)(rate * warmup);
    lat = malloc(count * 8);
    late = malloc(count * 8);
    int sfd = dial("SUB bench.ol 1\r\n");
    int pfd = dial("");
    start_ns = now_ns() + 20000000;
    pthread_t s, p;
    if (pollmode) {
        g_sfd = sfd;
        publisher(&pfd);
        while (s_got < count) drain(sfd, 1);
    } else {
        pthread_create(&s, NULL, subscriber, &sfd);
        pthread_create(&p, NULL, publisher, &pfd);
        pthread_join(p, NULL);
        pthread_join(s, NULL);
    }
    report("latency", lat, count);
    report("pacer-late", late, nlate);
    return 0;
}
