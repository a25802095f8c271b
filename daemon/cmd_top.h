/*
 * cmd_top: `gastroscreen top [--once] [--json] [--config FILE] [--endpoint events=URL]
 * [--timeout SECONDS]`, live throughput per stage.
 *
 * Subscribes to `stats.` on the coordinator's events socket: the coordinator publishes its own
 * StageStats (with slides in flight and the newest journal sequence number) once a second and
 * republishes each worker's heartbeat stats as `stats.<stage>.` (PROTOCOL.md §3, §5). top
 * keeps the latest stats of every instance, forgets an instance not heard from for 5 s, and
 * shows per stage: instances, tiles/s (sum), queue depth (sum), busy % (mean over instances),
 * items processed, errors and malformed messages (sums), resident memory (sum); and the slides
 * in flight. It redraws once a second (in place on a terminal).
 *
 * --once collects one heartbeat round (from one coordinator stats event to the next, so every
 * live worker has reported) and prints one frame; --json prints that snapshot as JSON:
 *     {"last_seq": N, "slides_in_flight": N, "coordinator": {...},
 *      "stages": [{"stage": "tiler", "instances": N, "tiles_per_second": X,
 *                  "queue_depth": N, "busy_percent": X, "processed": N, "errors": N,
 *                  "malformed": N, "wrong_type": N, "rss_bytes": N}, ... every stage]}
 */
#ifndef GS_DAEMON_CMD_TOP_H
#define GS_DAEMON_CMD_TOP_H

/* Runs the command on argv (argv[0] is "top"). Returns the exit status: 0 after --once or on
 * SIGINT/SIGTERM, 1 when no coordinator stats arrive within the timeout (not running), 2 on a
 * usage error. */
int gs_cmd_top(int argc, char **argv);

#endif
