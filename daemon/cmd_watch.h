/*
 * cmd_watch: `gastroscreen watch [--since SEQ] [--count N] [--config FILE]
 * [--endpoint events=URL] [--endpoint query=URL] [--timeout SECONDS]`, one line per verdict
 * as the coordinator publishes them.
 *
 * watch is the gap-recovering subscriber of PROTOCOL.md §11: it subscribes to `slide.` and
 * `stats.coordinator.` on the events socket, keeps the last sequence number it applied, and
 * when an event skips numbers (PUB dropped some, or the coordinator crashed between DONE and
 * the publication) or the coordinator's once-a-second stats event shows a newer last_seq, it
 * asks the query socket for the events since then (EventsSinceRequest, repeated while the
 * replies are full) and applies them in order. So every verdict is printed exactly once, in
 * journal order. Without --since it starts from the first event it hears; with --since SEQ
 * it first prints the verdicts journalled after SEQ.
 *
 * Line format: "<slide_id> <class> <score> <path> (<reason>)", plus
 * " [model: untrained — not a diagnosis]" when the verdict's model is untrained.
 */
#ifndef GS_DAEMON_CMD_WATCH_H
#define GS_DAEMON_CMD_WATCH_H

/* Runs the command on argv (argv[0] is "watch"). Returns the exit status: 0 after --count
 * verdicts or on SIGINT/SIGTERM, 1 when the coordinator is silent for the timeout at start
 * (not running) or a --since catch-up fails, 2 on a usage error. */
int gs_cmd_watch(int argc, char **argv);

#endif
