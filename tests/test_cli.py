"""Command line shared by the scripts: flags, one-line errors with exit status 2, device strategies, resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from snemo import cli, strategy as snstrategy

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("number_of_tracks_classification", "number_of_tracks_classification3D", "combined", "plot_confusion",
           "demo", "display")


def run_python(args, *, env=None, timeout=300, **kwargs):
    """Run the venv's Python in the repository with PYTHONPATH set; returns CompletedProcess (text)."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    full_env.update(env or {})
    return subprocess.run([sys.executable] + list(args), cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def real_stderr_lines(text):
    """Stderr lines that are not TensorFlow/absl start-up noise."""
    noise = ("WARNING: All log messages", "I0000", "E0000", "W0000")
    return [line for line in text.splitlines() if line.strip() and not line.startswith(noise)]


# ------------------------------------------------------------------------------------------------
# Flags (no TensorFlow)
# ------------------------------------------------------------------------------------------------


def test_help_is_fast_and_does_not_import_tensorflow():
    code = ("import sys, importlib\n"
            f"for name in {SCRIPTS!r}:\n"
            "    importlib.import_module(name).build_parser().format_help()\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("flags, message, command_line", [
    (["--no-such-flag"], "unrecognized arguments", True),  # the script's entry point, in a new process
    (["--OneDeviceStrategy", "/cpu:0", "--MultiWorkerMirroredStrategy"], "not allowed with", False),
    (["--epochs", "-1"], "--epochs", False),
    (["--view", "diagonal"], "invalid choice", False),
])
def test_wrong_flag_is_one_line_and_exit_2(flags, message, command_line, capsys):
    if command_line:
        result = run_python(["number_of_tracks_classification.py"] + flags)
        status, err = result.returncode, result.stderr
    else:
        import number_of_tracks_classification as script

        with pytest.raises(SystemExit) as stop:
            script.main(flags)
        status, err = stop.value.code, capsys.readouterr().err
    assert status == 2
    lines = real_stderr_lines(err)
    assert len(lines) == 1 and message in lines[0], err


def test_explicit_flags_and_resume_rules():
    import number_of_tracks_classification as script

    parser = script.build_parser()
    assert cli.explicit_dests(parser, ["--seed", "0", "--view", "side"]) == {"seed", "view"}
    assert parser.parse_args([]).seed == 0  # defaults restored after the probe
    old = {"seed": 0, "view": "top", "epochs": 1, "data": ["a"], "quiet": False}
    new = {"seed": 1, "view": "top", "epochs": 3, "data": ["b"], "quiet": True}
    assert cli.resume_conflicts(old, new) == ["--seed 0 (now 1)"]
    assert cli.resume_changes(old, new) == {"epochs": [1, 3], "quiet": [False, True]}


def test_out_folder_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(cli.RunFolderError, match="lies under the file"):
        cli.check_out_dir(tmp_path / "file" / "run")
    with pytest.raises(cli.RunFolderError, match="is a file"):
        cli.check_out_dir(tmp_path / "file")
    with pytest.raises(cli.RunFolderError, match="cannot write"):
        cli.check_out_dir("/proc/snemo_test_run")
    assert cli.check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe leaves nothing


def test_cuda_filter_drops_only_the_cuda_lines(capfd):
    import os as _os

    with snstrategy._stderr_without(snstrategy.STARTUP_NOISE):
        _os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: CUDA error\n")
        _os.write(2, b"a real error\n")
    assert capfd.readouterr().err == "a real error\n"


@pytest.mark.skipif(snstrategy.gpu_driver_present(), reason="measures the machine without an NVIDIA driver")
def test_no_cuda_line_on_a_machine_without_gpu(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run([sys.executable, "number_of_tracks_classification.py", "--data", str(tmp_path / "x.root"),
                             "--out", str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: file {tmp_path / 'x.root'}: no such file or directory"]
    assert not (tmp_path / "run").exists()


def test_shared_defaults():
    import number_of_tracks_classification as script

    args = script.build_parser().parse_args([])
    assert args.max_tracks == 4 and args.data is None and args.dataset_kind == "my_generator"
    assert args.view == "top" and args.split_by == "event" and not args.streaming
    assert args.OneDeviceStrategy is None and args.MirroredStrategy is None and not args.MultiWorkerMirroredStrategy
    args = script.build_parser().parse_args(["--MirroredStrategy", "/gpu:0", "/gpu:1", "--data", "a.root", "b/"])
    assert args.MirroredStrategy == ["/gpu:0", "/gpu:1"] and args.data == ["a.root", "b/"]
    out = cli.default_out("number_of_tracks_top")
    assert out.parent == Path("runs") and out.name.startswith("number_of_tracks_top-20")


def test_worker_shard_and_chief_from_cluster_spec():
    def fake(spec, task_type, task_id):
        resolver = SimpleNamespace(cluster_spec=lambda: SimpleNamespace(as_dict=lambda: spec), task_type=task_type,
                                   task_id=task_id)
        return SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["a:1", "b:1", "c:1"]}
    assert snstrategy.worker_shard(fake(workers, "worker", 2)) == (2, 3)
    assert snstrategy.is_chief(fake(workers, "worker", 0))
    assert not snstrategy.is_chief(fake(workers, "worker", 1))
    with_chief = {"chief": ["a:1"], "worker": ["b:1"]}
    assert snstrategy.worker_shard(fake(with_chief, "worker", 0)) == (1, 2)
    assert snstrategy.is_chief(fake(with_chief, "chief", 0)) and not snstrategy.is_chief(fake(with_chief, "worker", 0))
    assert snstrategy.worker_shard(SimpleNamespace()) == (0, 1) and snstrategy.is_chief(SimpleNamespace())


def test_slurm_detection(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert not snstrategy._slurm_multi_task()
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not snstrategy._slurm_multi_task()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert snstrategy._slurm_multi_task()


# ------------------------------------------------------------------------------------------------
# Strategies and error handling in-process (TensorFlow)
# ------------------------------------------------------------------------------------------------


def strategy_args(**flags):
    return SimpleNamespace(OneDeviceStrategy=flags.get("one"), MirroredStrategy=flags.get("mirrored"),
                           MultiWorkerMirroredStrategy=flags.get("multi", False))


def test_strategy_selection_in_process():
    tf = pytest.importorskip("tensorflow")
    default = snstrategy.make_strategy(strategy_args())
    if tf.config.list_logical_devices("GPU"):
        assert isinstance(default, tf.distribute.MirroredStrategy)
    else:
        assert default is tf.distribute.get_strategy()
    one = snstrategy.make_strategy(strategy_args(one="/cpu:0"))
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert snstrategy.describe(one).startswith("OneDeviceStrategy, 1 replica")
    with pytest.raises(snstrategy.StrategyError, match="does not exist"):
        snstrategy.check_devices(["/gpu:17"])
    with pytest.raises(snstrategy.StrategyError):
        snstrategy.check_devices(["banana"])
    with pytest.raises(snstrategy.StrategyError, match="twice"):
        snstrategy.check_devices(["/cpu:0", "CPU:0"])


def test_missing_device_is_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    import number_of_tracks_classification as script

    status = script.main(["--OneDeviceStrategy", "/gpu:7", "--out", str(tmp_path / "x"), "--data", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/gpu:7" in err[0] and "does not exist" in err[0]


def test_bad_data_is_one_line_exit_2(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    import number_of_tracks_classification as script

    missing = tmp_path / "nothing_here.root"
    assert script.main(["--data", str(missing), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing_here.root" in err[0]
    not_root = tmp_path / "fake.root"
    not_root.write_bytes(b"this is not a ROOT file")
    assert script.main(["--data", str(not_root), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fake.root" in err[0]


# ------------------------------------------------------------------------------------------------
# Whole runs under other strategies, and a real kill (about 15 s each)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 ROOT files of 40 events, 1..4 tracks (my_generator)."""
    from my_generator.my_generator import generate
    from snemo.events import write_events

    folder = tmp_path_factory.mktemp("tiny_cli")
    for n_tracks in (1, 2, 3, 4):
        write_events(folder / f"t{n_tracks}.root", generate(40, n_tracks, np.random.default_rng(n_tracks)))
    return folder


def run_flags(data, out, epochs):
    return ["number_of_tracks_classification.py", "--data", str(data), "--out", str(out), "--epochs", str(epochs),
            "--batch-size", "32", "--quiet"]


def history(out):
    return json.loads((Path(out) / "history.json").read_text())["epochs"]


def test_mirrored_run_end_to_end(tiny_data, tmp_path):
    """--MirroredStrategy over two logical CPUs: make_strategy's MirroredStrategy, 2 replicas, runs a whole job."""
    out = tmp_path / "mirrored"
    code = ("import sys, tensorflow as tf\n"
            "cpu = tf.config.list_physical_devices('CPU')[0]\n"
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
            "import number_of_tracks_classification as s\n"
            f"sys.exit(s.main({run_flags(tiny_data, out, 1)[1:] + ['--MirroredStrategy', '/cpu:0', '/cpu:1']!r}))\n")
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["strategy"].startswith("MirroredStrategy, 2 replica")
    assert history(out)[0]["samples"] == json.loads((out / "config.json").read_text())["data"]["n_train"]
    assert (out / "metrics.json").exists() and (out / "model.keras").exists()


def free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_two_worker_multiworker_run(tiny_data, tmp_path):
    out = tmp_path / "multiworker"
    ports = [free_port(), free_port()]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                "task": {"type": "worker", "index": index}})
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=tf_config)
        command = [sys.executable] + run_flags(tiny_data, out, 1) + ["--MultiWorkerMirroredStrategy"]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    outputs = [p.communicate(timeout=600) for p in processes]  # generous: two TF processes on a loaded machine
    assert [p.returncode for p in processes] == [0, 0], outputs
    config = json.loads((out / "config.json").read_text())
    assert "worker 0 of 2" in config["strategy"]
    n_train_local = config["data"]["n_train"]
    assert history(out)[0]["samples"] >= 2 * n_train_local - 32  # one epoch covers both shards
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_events"] > config["data"]["n_test"]  # confusion summed over both workers' test shards
    assert "accuracy:" in outputs[0][0] and "accuracy:" not in outputs[1][0]  # only the chief reports


def test_real_kill_then_resume(tiny_data, tmp_path, capsys):
    """SIGKILL a real training process after its first checkpoint; the job started again resumes (in-process)."""
    import number_of_tracks_classification as script

    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen([sys.executable] + run_flags(tiny_data, out, 200), cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not list((out / "checkpoints" / "train").glob("ckpt-*.index")):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list((out / "checkpoints" / "train").glob("ckpt-*.index")), "no epoch finished before the kill"
    # Epochs that completed: the newest checkpoint (history.json may already hold the next epoch's
    # record if the kill fell between the two writes; resume drops it).
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(str(out / "checkpoints" / "train"))
    done = int(latest.rsplit("-", 1)[1]) if latest else 0
    assert len(history(out)) in (done, done + 1)
    capsys.readouterr()
    assert script.main(run_flags(tiny_data, out, done + 1)[1:-1]) == 0  # not quiet
    assert done == 0 or f"after epoch {done}" in capsys.readouterr().out
    assert [r["epoch"] for r in history(out)] == list(range(1, done + 2))
