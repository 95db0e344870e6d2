"""Progress bars: redrawn in place on a terminal, a few plain lines in a log."""
import io

from video2reward.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(stream, updates=500):
    with progress(total=updates, desc="demos", unit="traj", file=stream) as bar:
        for i in range(updates):
            bar.set_postfix_str(f"traj {i}", refresh=False)
            bar.update()
    return stream.getvalue()


def test_a_log_gets_plain_lines_at_most_every_interval():
    log = run(io.StringIO())
    lines = log.splitlines()
    assert "\r" not in log and len(lines) == 2, lines  # all updates fell within one interval: start and end
    assert lines[0].startswith("demos:   0%") and lines[1].startswith("demos: 100%") and "traj 499" in lines[1]


def test_a_terminal_gets_tqdm_as_it_is():
    assert "\r" in run(Terminal(), updates=3)
