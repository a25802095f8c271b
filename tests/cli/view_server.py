"""Starting and stopping `gastroscreen view` for the viewer tests (view_http.py and
tests/web/view_browser.py)."""
import os
import re
import signal
import subprocess


class ViewServer:
    """`gastroscreen view OUT_DIR ARGS...` in the background; .base is its http://host:port."""

    def __init__(self, exe, out_dir, *args):
        self.proc = subprocess.Popen([exe, "view", out_dir, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"at (http://[^/ ]+)/", line)
        if not m:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError("view did not start: %r %s %s" % (line, out, err))
        self.base = m.group(1)

    def stop(self):
        """SIGTERM; returns the exit status (0 expected)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.stop()


def slide_id(out_dir):
    ids = [n for n in os.listdir(out_dir) if re.fullmatch(r"[0-9a-f]{16}", n)]
    assert len(ids) == 1, ids
    return ids[0]

