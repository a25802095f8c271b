/* tcp_relay: see tcp_relay.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/unit/tcp_relay.h"

static void keep(relay *r, const uint8_t *b, size_t n)
{
    if (r->n_seen + n > r->cap) {
        r->cap = 2 * (r->n_seen + n);
        r->seen = realloc(r->seen, r->cap);
        assert_non_null(r->seen);
    }
    memcpy(r->seen + r->n_seen, b, n);
    r->n_seen += n;
}

static void *relay_thread(void *arg)
{
    relay *r = arg;
    int a = accept(r->listen_fd, NULL, NULL);
    if (a < 0)
        return NULL;
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->server_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(b, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(a);
        close(b);
        return NULL;
    }
    uint8_t buf[65536];
    while (!r->stop) {
        struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
        if (poll(p, 2, 50) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP)))
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n <= 0) {
                r->stop = 1;
                break;
            }
            keep(r, buf, (size_t)n);
            if (write(i == 0 ? b : a, buf, (size_t)n) != n)
                r->stop = 1;
        }
    }
    close(a);
    close(b);
    return NULL;
}

/* Starts a relay to the port of tcp://127.0.0.1:PORT; writes its own endpoint into ep. */
void relay_start(relay *r, const char *server_ep, char *ep, size_t n)
{
    memset(r, 0, sizeof *r);
    r->server_port = atoi(strrchr(server_ep, ':') + 1);
    r->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(r->listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(r->listen_fd, 1), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(r->listen_fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(ep, n, "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
    assert_int_equal(pthread_create(&r->thread, NULL, relay_thread, r), 0);
}

void relay_stop(relay *r)
{
    r->stop = 1;
    shutdown(r->listen_fd, SHUT_RDWR);
    close(r->listen_fd);
    pthread_join(r->thread, NULL);
}

int relay_contains(const relay *r, const void *needle, size_t n)
{
    return r->n_seen >= n && memmem(r->seen, r->n_seen, needle, n) != NULL;
}

/* The longest run of one byte value in what the relay saw. */
size_t relay_longest_run(const relay *r, uint8_t value)
{
    size_t best = 0, run = 0;
    for (size_t i = 0; i < r->n_seen; i++) {
        run = r->seen[i] == value ? run + 1 : 0;
        if (run > best)
            best = run;
    }
    return best;
}
