"""ThreadGovernor: the thread count follows the cores other processes leave free, decided over full windows."""
import pytest

from bifusion_core.threads import ThreadGovernor, machine_busy_seconds, own_cpu_seconds


class Machine:
    """A fake 2-core machine: wall clock, machine-wide busy CPU seconds, and this process's CPU seconds."""

    def __init__(self):
        self.t = self.busy = self.own = 0.0
        self.readable = True

    def run(self, seconds, own_cores, other_cores):
        self.t += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)

    def governor(self, **kw):
        self.set_calls = []
        return ThreadGovernor(max_threads=2, cpus=2, busy=lambda: self.busy if self.readable else None,
                              own=lambda: self.own, clock=lambda: self.t, set_threads=self.set_calls.append, **kw)


def work(g, m, seconds, own_cores, other_cores):
    """One unit of work under the governor; returns the thread count it ran with."""
    with g.work() as n:
        m.run(seconds, own_cores, other_cores)
    return n


def test_a_busy_core_takes_one_thread_away_and_gives_it_back_when_it_is_free():
    m = Machine()
    g = m.governor()
    assert work(g, m, 1.0, own_cores=1.9, other_cores=0.0) == 2 and m.set_calls == []  # idle: keep both
    assert work(g, m, 1.0, own_cores=1.0, other_cores=1.0) == 2  # another process holds a core ...
    assert g.threads == 1 and m.set_calls == [1] and g.others == pytest.approx(1.0)  # ... from the next frame on
    assert work(g, m, 1.0, own_cores=1.0, other_cores=1.0) == 1 and m.set_calls == [1]  # not set again
    work(g, m, 1.0, own_cores=1.0, other_cores=0.1)  # it stopped
    assert g.threads == 2 and m.set_calls == [1, 2] and g.changes == 2


def test_windows_sum_the_work_only_and_light_load_keeps_every_thread():
    m = Machine()
    g = m.governor(window_s=0.5)
    work(g, m, 0.2, own_cores=1.0, other_cores=1.0)
    assert g.threads == 2 and g.others is None  # 0.2 s of work is not a full window yet
    m.run(5.0, own_cores=0.0, other_cores=2.0)  # between frames (or other benchmark workers): not counted
    work(g, m, 0.4, own_cores=2.0, other_cores=0.0)
    assert g.others == pytest.approx(0.2 / 0.6) and g.threads == 2  # the 0.6 s of work as a whole
    work(g, m, 1.0, own_cores=2.0, other_cores=0.3)  # a light background load: 1.7 cores free + margin -> 2
    assert g.threads == 2
    work(g, m, 1.0, own_cores=1.0, other_cores=0.9)
    assert g.threads == 1


def test_unreadable_cpu_time_keeps_the_starting_count():
    m = Machine()
    m.readable = False
    g = m.governor()
    work(g, m, 1.0, own_cores=1.0, other_cores=1.0)
    assert g.threads == 2 and m.set_calls == [] and g.others is None
    m.readable = True
    work(g, m, 1.0, own_cores=1.0, other_cores=1.0)
    assert g.threads == 1


def test_a_failing_unit_of_work_still_counts_and_propagates():
    m = Machine()
    g = m.governor()
    with pytest.raises(RuntimeError):
        with g.work():
            m.run(1.0, own_cores=1.0, other_cores=1.0)
            raise RuntimeError("frame failed")
    assert g.threads == 1


def test_bad_settings_and_the_real_readers():
    with pytest.raises(ValueError):
        ThreadGovernor(max_threads=0)
    with pytest.raises(ValueError):
        ThreadGovernor(window_s=0)
    assert machine_busy_seconds("/nonexistent/stat") is None
    busy, own = machine_busy_seconds(), own_cpu_seconds()
    assert busy is not None and busy > 0 and own > 0  # Linux: /proc/stat is there


def test_frame_processors_adapt_by_default_and_the_environment_can_turn_it_off(monkeypatch):
    import torch

    from bifusion_core.models.presets import tiny_config
    from bifusion_core.models.bifusion import BiFusionModel
    from bifusion_core.pipeline import FrameProcessor

    model = BiFusionModel(tiny_config())
    monkeypatch.delenv("BIFUSION_ADAPTIVE_THREADS", raising=False)
    assert isinstance(FrameProcessor(model, "cpu").threads, ThreadGovernor)
    assert FrameProcessor(model, "cpu", adaptive_threads=False).threads is None
    monkeypatch.setenv("BIFUSION_ADAPTIVE_THREADS", "0")
    assert FrameProcessor(model, "cpu").threads is None
    assert FrameProcessor(model, "cpu", adaptive_threads=True).threads.max_threads == torch.get_num_threads()
