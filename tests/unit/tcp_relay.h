/*
 * tcp_relay: a TCP relay for tests that look at the bytes on the wire. It accepts one
 * connection on a port of 127.0.0.1 of its own, connects to the server's port and copies the
 * bytes both ways in a thread, keeping every byte seen (both directions, in arrival order).
 *
 * Use: relay r; relay_start(&r, "tcp://127.0.0.1:41234", ep, sizeof ep); connect the client
 * to ep; ...; relay_stop(&r); relay_contains(&r, "secret", 6); free(r.seen).
 */
#ifndef GS_TESTS_UNIT_TCP_RELAY_H
#define GS_TESTS_UNIT_TCP_RELAY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int listen_fd, server_port;
    uint8_t *seen; /* every byte relayed; the caller frees it after relay_stop */
    size_t n_seen, cap;
    volatile int stop;
    pthread_t thread;
} relay;

/* Starts a relay to the port of server_ep (tcp://127.0.0.1:PORT) and writes its own endpoint
 * into ep. */
void relay_start(relay *r, const char *server_ep, char *ep, size_t n);

/* Stops the thread and closes the sockets; r->seen stays. */
void relay_stop(relay *r);

/* 1 when the bytes seen contain needle. */
int relay_contains(const relay *r, const void *needle, size_t n);

/* The longest run of one byte value in the bytes seen. */
size_t relay_longest_run(const relay *r, uint8_t value);

#endif
