/* The floor: a blocking TCP echo server that answers each Arbiter frame (32-byte header + body) with the
 * same bytes (PING's opcode turned into PONG's), one thread per connection. It measures what loopback TCP
 * itself costs on this machine, at any frame size and connection count.
 * cc -O2 -pthread -o floor_echo floor_echo.c && ./floor_echo PORT */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (1 << 20)

static int read_full(int fd, unsigned char *p, size_t n) {
    while (n > 0) { ssize_t r = read(fd, p, n); if (r <= 0) return -1; p += r; n -= (size_t)r; }
    return 0;
}

static void *serve(void *arg) {
    int c = (int)(intptr_t)arg, one = 1;
    unsigned char *buf = malloc(MAX_FRAME);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        if (read_full(c, buf, 32)) break;
        uint32_t len; memcpy(&len, buf + 16, 4);
        if (len > MAX_FRAME - 32 || read_full(c, buf + 32, len)) break;
        buf[5] |= 0x80; /* PING -> PONG */
        if (write(c, buf, 32 + len) != (ssize_t)(32 + len)) break;
    }
    free(buf);
    close(c);
    return 0;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7900;
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 128)) { perror("bind/listen"); return 1; }
    for (;;) {
        int c = accept(s, 0, 0);
        if (c < 0) continue;
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 64 * 1024);
        if (pthread_create(&t, &at, serve, (void *)(intptr_t)c)) close(c);
        pthread_attr_destroy(&at);
    }
}
