/*
 * cmd_infer: `gastroscreen infer --model BUNDLE (TILE.png ... | SLIDE --x X --y Y) [--out DIR]`,
 * the networks of a bundle run on one tile (or a batch of PNG tiles).
 *
 * The multi-task network runs on the tile(s): the command prints the patch score (sigmoid of
 * the logit), a summary of the 512-d feature (min, mean, max, L2 norm) and of the segmentation
 * heatmap (sigmoid of the seg logits), and writes the heatmap as a grey PNG (heatmap.png, or
 * heatmap_<i>.png for a batch) into DIR (default: the current folder). A slide tile is read at
 * the bundle's target_mpp with its top-left corner at level-0 pixel (X, Y), tile_size square.
 *
 * With --out DIR every network present in the bundle also runs, and every raw output is
 * written as float32 .npy named as model/pytorch/run.py names them, on inputs prepared the
 * way run.py expects (which are written too, so a script can feed run.py the same bytes):
 *  - multitask on the tile(s):            input tiles_u8.npy [N,H,W,3] uint8
 *  - foreground on the tile(s) as they are (a 512 tile is already the 512x512 thumbnail size)
 *  - blur on the central 256x256 crop (the whole tile if smaller): blur_u8.npy [N,h,w,3]
 *  - screener on each tile's multitask feature repeated to 64 rows: screener_input.npy
 *    [N,64,512] float32 (run.py's --screener accepts it as is)
 * Provenance of every network is printed; an untrained one reads "model: untrained — not a
 * diagnosis". Errors name the file and go to stderr with a non-zero exit status.
 */
#ifndef GS_DAEMON_CMD_INFER_H
#define GS_DAEMON_CMD_INFER_H

/* Runs the command on argv (argv[0] is "infer"). Returns the exit status: 0 on success, 1 when
 * the model or input could not be read or a network failed, 2 on a usage error. */
int gs_cmd_infer(int argc, char **argv);

#endif
