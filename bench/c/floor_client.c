/* A blocking ping-pong client: sends N PING frames (payload P bytes) one at a time and prints p50/p99 of
 * the round trip. cc -O2 -o floor_client floor_client.c && ./floor_client PORT N P */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000ull + t.tv_nsec; }
static int cmp(const void *a, const void *b) { uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7900, n = argc > 2 ? atoi(argv[2]) : 100000, p = argc > 3 ? atoi(argv[3]) : 32;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    unsigned char frame[32 + 4096] = {'A', 'R', 'B', 'T', 1, 2}, in[32 + 4096];
    uint32_t len = (uint32_t)p; memcpy(frame + 16, &len, 4);
    uint64_t *rtt = malloc(sizeof(uint64_t) * n);
    for (int i = 0; i < n; i++) {
        uint64_t id = i; memcpy(frame + 8, &id, 8);
        uint64_t t0 = now();
        if (write(s, frame, 32 + p) != 32 + p) { perror("write"); return 1; }
        size_t got = 0;
        while (got < 32 + (size_t)p) { ssize_t r = read(s, in + got, 32 + p - got); if (r <= 0) { perror("read"); return 1; } got += r; }
        rtt[i] = now() - t0;
    }
    qsort(rtt, n, sizeof *rtt, cmp);
    printf("round trip over %d pings of %d bytes: p50 %.1f us  p99 %.1f us  p99.9 %.1f us\n", n, 32 + p,
           rtt[n / 2] / 1e3, rtt[(int)(n * 0.99)] / 1e3, rtt[(int)(n * 0.999)] / 1e3);
    return 0;
}
