"""Packed datasets (genie/data/packed.py, issue 25): `genie data pack` writes litdata shards that hold the same
clips as the video folder; every stage's DataModule streams them; two ranks read disjoint clips whose union is the
whole set; a run resumed mid-epoch continues without repeating or skipping a clip; a damaged shard is a one-line
error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genie.cli import main
from genie.config import DataConfig
from genie.data.clips import DataError
from genie.data.datamodule import VideoDataModule
from genie.data.packed import is_packed, pack, packed_split, read_manifest

CUT = dict(seq_len=4, resolution=32, clip_step=4, val_fraction=0.25, seed=0)


def key(item: dict) -> tuple[int, int]:
    return int(item["video_index"]), int(item["start"])


@pytest.fixture(scope="module")
def packed(sprite_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack") / "sprites"
    pack(sprite_data, out, num_workers=2, **CUT)
    return out


def test_pack_holds_exactly_the_clips_of_the_video_folder(sprite_data, packed):
    manifest = read_manifest(packed)
    assert is_packed(packed) and not is_packed(sprite_data)
    for split in ("train", "val"):
        cfg = DataConfig(dir=str(sprite_data), max_val_clips=10_000, **CUT)
        dm = VideoDataModule(cfg)
        dm.setup()
        videos = dm.train_set if split == "train" else dm.val_set
        want = {key(videos[i]): videos[i] for i in range(len(videos))}
        got = packed_split(packed, split)
        assert len(got) == len(want) == manifest["splits"][split]["clips"]
        for i in range(len(got)):
            item = got[i]
            ref = want[key(item)]
            assert torch.equal(item["video"], ref["video"]) and item["video"].dtype == torch.uint8
            assert torch.equal(item["actions"], ref["actions"])
        files = [v.path.relative_to(sprite_data).as_posix() for v in videos.videos]
        assert manifest["splits"][split]["files"] == files
    assert not set(manifest["splits"]["train"]["files"]) & set(manifest["splits"]["val"]["files"])


def test_training_record_of_a_pack_names_its_source_files(sprite_data, packed):
    from genie.data.heldout import fingerprint, training_record

    record = training_record(DataConfig(dir=str(packed), **CUT))
    assert record["data_dir"] == str(Path(sprite_data).resolve())
    assert record["train_fingerprints"] == [fingerprint(Path(sprite_data) / f) for f in record["train_files"]]


def test_pack_refuses_to_overwrite_and_training_refuses_another_cut(sprite_data, packed, capsys):
    with pytest.raises(DataError, match="already a packed dataset; pass --overwrite"):
        pack(sprite_data, packed, **CUT)
    dm = VideoDataModule(DataConfig(dir=str(packed), **{**CUT, "seq_len": 8}))
    with pytest.raises(DataError, match=r"packed with seq_len 4 \(config 8\)"):
        dm.setup()
    assert main(["data", "pack", str(sprite_data), str(packed), "--seq-len", "4"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already a packed dataset" in err[0]


SLOW_PACK = """
import sys, time
import genie.data.packed as P
write = P._ClipWriter.__call__
P._ClipWriter.__call__ = lambda self, i: (time.sleep(0.05), write(self, i))[1]  # slow enough to be killed mid-way
P.pack(sys.argv[1], sys.argv[2], num_workers=2, chunk_bytes="50KB", **{cut})
"""


@pytest.mark.slow
def test_killed_pack_resumes_from_its_finished_chunks(sprite_data, packed, tmp_path, caplog):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    script = SLOW_PACK.replace("{cut}", repr(CUT))
    proc = subprocess.Popen([sys.executable, "-c", script, str(sprite_data), str(out)], start_new_session=True)
    checkpoint, deadline = out / "train" / ".checkpoints" / "checkpoint-0.json", time.time() + 120

    def finished_chunks() -> list[str]:
        try:
            return [c["filename"] for c in json.loads(checkpoint.read_text())["chunks"]]
        except (OSError, ValueError, KeyError):
            return []

    while time.time() < deadline and proc.poll() is None and len(finished_chunks()) < 2:
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the pack and its litdata workers
    proc.wait()
    kept = {name: (out / "train" / name).stat().st_mtime_ns for name in finished_chunks()}
    assert len(kept) >= 2 and not (out / "genie_pack.json").exists()

    with caplog.at_level("INFO", logger="genie.data.packed"):
        pack(sprite_data, out, num_workers=2, chunk_bytes="50KB", **CUT)
    assert "resuming the killed pack" in caplog.text
    assert {name: (out / "train" / name).stat().st_mtime_ns for name in kept} == kept  # not written again
    assert not (out / "genie_pack.partial.json").exists()
    for split in ("train", "val"):
        want = {key(item): item for item in packed_split(packed, split)}
        got = packed_split(out, split)
        assert len(got) == len(want) and {key(item) for item in got} == set(want)  # none repeated or missing
        for item in got:
            assert torch.equal(item["video"], want[key(item)]["video"])


def test_pack_refuses_a_folder_that_is_not_a_pack(sprite_data, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a packed dataset; pick an empty or new OUT"):
        pack(sprite_data, tmp_path / "mine", **CUT)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_pack_refuses_a_store_litdata_cannot_write(sprite_data):
    with pytest.raises(DataError, match="writes only to a local folder, s3://"):
        pack(sprite_data, "hf://datasets/x/y", **CUT)
    try:
        import s3fs  # noqa: F401
    except ImportError:  # without s3fs an s3:// pack stops before packing anything, naming what to install
        with pytest.raises(DataError, match="pip install s3fs"):
            pack(sprite_data, "s3://bucket/prefix", **CUT)


def test_truncated_or_missing_shard_is_a_one_line_error_naming_it(packed, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(packed, broken)
    chunk = sorted((broken / "train").glob("*.bin"))[0]
    chunk.write_bytes(chunk.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"{chunk}: shard truncated"):
        packed_split(broken, "train")
    chunk.unlink()
    with pytest.raises(DataError, match=f"{chunk}: shard missing"):
        VideoDataModule(DataConfig(dir=str(broken), **CUT)).setup()
    (broken / "genie_pack.json").write_text("{")
    with pytest.raises(DataError, match="genie_pack.json: unreadable"):
        read_manifest(broken)


def _rank_keys(rank: int, world: int, path: str, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        dataset = packed_split(path, "train", shuffle=True, seed=3)
        keys = [key(item) for item in dataset]
        Path(out, f"{rank}.json").write_text(json.dumps(keys))
    finally:
        dist.destroy_process_group()


def test_two_ranks_read_disjoint_clips_whose_union_is_the_whole_set(packed, tmp_path):
    # local:/path: litdata reads the folder as it reads an object store (chunks fetched into a cache first)
    init = f"file://{tmp_path / 'rendezvous'}"
    remote = f"local:{packed}"
    assert is_packed(remote) and read_manifest(remote)["splits"]["train"]["clips"] > 0
    mp.spawn(_rank_keys, args=(2, remote, init, str(tmp_path)), nprocs=2, join=True)
    ranks = [{tuple(k) for k in json.loads((tmp_path / f"{r}.json").read_text())} for r in range(2)]
    every = {key(item) for item in packed_split(packed, "train")}
    assert ranks[0] and ranks[1]
    assert not ranks[0] & ranks[1]
    assert ranks[0] | ranks[1] == every


LIGHTNING_DDP = """
import sys
from pathlib import Path

import lightning as L
import torch

from genie.config import DataConfig
from genie.data.datamodule import VideoDataModule

pack, out, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])


class Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        with open(out / f"{self.global_rank}.txt", "a") as f:
            for v, s in zip(batch["video_index"].tolist(), batch["start"].tolist()):
                f.write(f"{v} {s}\\n")
        return (self.w - batch["video"].float().mean() / 255) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


cfg = DataConfig(dir=pack, batch_size=4, num_workers=1, **{cut})
trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                    limit_val_batches=0)
trainer.fit(Recorder(), VideoDataModule(cfg))
"""


@pytest.mark.slow
def test_lightning_ddp_ranks_stream_disjoint_clips_of_a_pack(packed, tmp_path):
    # a real Lightning DDP run (two CPU processes on gloo, Lightning's own launcher) on the packed dataset: in one
    # epoch the two ranks read disjoint clips, none twice
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(LIGHTNING_DDP.replace("{cut}", repr(CUT)))
    every = {key(item) for item in packed_split(packed, "train")}
    steps = len(every) // 8  # one epoch: 4 clips a step on each of 2 ranks
    command = [sys.executable, str(script), str(packed), str(tmp_path), str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [
        [tuple(map(int, line.split())) for line in (tmp_path / f"{r}.txt").read_text().splitlines()] for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 4 * steps
    assert len(set(ranks[0]) | set(ranks[1])) == 8 * steps  # no clip twice, on one rank or across the two
    assert set(ranks[0]) | set(ranks[1]) <= every


class _Recorder(L.LightningModule):
    """A one-weight model that writes down which clips each training step read."""

    def __init__(self, log_file: Path):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.log_file = log_file

    def training_step(self, batch, batch_idx):
        with open(self.log_file, "a") as f:
            for v, s in zip(batch["video_index"].tolist(), batch["start"].tolist()):
                f.write(f"{self.global_step} {v} {s}\n")
        return (self.w - batch["video"].float().mean() / 255) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(packed: Path, root: Path, log_file: Path, max_steps: int, ckpt: Path | None = None) -> None:
    cfg = DataConfig(dir=str(packed), batch_size=4, num_workers=2, **CUT)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(root, every_n_train_steps=3, save_top_k=-1)],
    )
    trainer.fit(_Recorder(log_file), VideoDataModule(cfg), ckpt_path=ckpt)


def read_steps(log_file: Path) -> list[tuple[int, int, int]]:
    return [tuple(map(int, line.split())) for line in log_file.read_text().splitlines()]


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_without_repeating_or_skipping_a_clip(packed, tmp_path):
    clips = len(packed_split(packed, "train"))
    steps = clips // 4 + 3  # into the second epoch
    whole = tmp_path / "whole.log"
    _fit(packed, tmp_path / "a", whole, steps)
    cut = tmp_path / "cut.log"
    _fit(packed, tmp_path / "b", cut, 3 * (steps // 6))  # stopped mid-epoch, at a checkpoint
    ckpt = sorted((tmp_path / "b").glob("*.ckpt"), key=os.path.getmtime)[-1]
    _fit(packed, tmp_path / "b", cut, steps, ckpt=ckpt)
    assert read_steps(cut) == read_steps(whole)
    first_epoch = [(v, s) for step, v, s in read_steps(whole) if step < clips // 4]
    assert len(first_epoch) == len(set(first_epoch)) == (clips // 4) * 4


def test_the_token_cache_of_a_pack_holds_its_clips_ids_and_is_reused(packed, tmp_path, monkeypatch):
    # the dynamics stage's token cache reads a pack once, in its stored order, as it reads a folder (issue 25)
    from einops import rearrange
    from tiny import tiny_lam, tiny_tokenizer

    from genie.data.token_cache import META_FILE, TokenDataModule
    from genie.models.pixels import video_to_float

    torch.manual_seed(0)
    tokenizer, lam = tiny_tokenizer().eval(), tiny_lam().eval()
    source = packed_split(packed, "train")  # every clip, in stored order (one process)
    # as torchrun and Lightning's launcher start each rank, before torch.distributed is initialised: local rank 0
    # must still encode every clip (litdata would take its share by WORLD_SIZE)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = DataConfig(dir=str(packed), batch_size=4, num_workers=0, **CUT)
    datamodule = TokenDataModule(cfg, tmp_path / "cache")
    datamodule.build_cache(tokenizer, lam, torch.device("cpu"), "32-true", progress=False)
    datamodule.setup()
    assert len(datamodule.train_tokens) == len(source) == read_manifest(packed)["splits"]["train"]["clips"]
    with torch.no_grad():
        for i in (0, len(source) // 2, len(source) - 1):
            video = video_to_float(source[i]["video"][None])
            row = datamodule.train_tokens[i]
            assert torch.equal(row["ids"], rearrange(tokenizer.encode(video), "b t h w -> b t (h w)")[0])
            assert torch.equal(row["latent_actions"], lam.infer_actions(video)[0])
    meta = (tmp_path / "cache" / META_FILE).read_text()
    again = TokenDataModule(cfg, tmp_path / "cache")
    again.build_cache(tokenizer, lam, torch.device("cpu"), "32-true", progress=False)
    assert (tmp_path / "cache" / META_FILE).read_text() == meta, "the same pack and models: the cache is reused"
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["ids"].shape == (4, 4, 64) and batch["latent_actions"].shape == (4, 3)


@pytest.fixture
def s3_store(monkeypatch):
    """An S3 endpoint on this machine (moto's server; no network here): the bucket s3://genie-test, reached by
    boto3, s3fs and litdata's obstore client through AWS_ENDPOINT_URL. Yields a boto3 client of it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    import socket

    import boto3
    import litdata.streaming.downloader as downloader
    import s3fs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = dict(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # the endpoint speaks plain http, which obstore refuses unless told (a real bucket is https)
    monkeypatch.setattr(
        downloader, "_OBSTORE_CLIENT_OPTIONS", {**downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
    )
    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3")
    client.create_bucket(Bucket="genie-test")
    yield client
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def _objects(client, prefix: str) -> dict[str, object]:
    listing = client.list_objects_v2(Bucket="genie-test", Prefix=prefix).get("Contents", [])
    return {o["Key"].removeprefix(prefix): o["LastModified"] for o in listing}


@pytest.mark.slow
def test_pack_in_an_object_store_streams_the_same_clips_and_resumes_when_killed(
    sprite_data, packed, s3_store, tmp_path, caplog
):
    import signal
    import subprocess
    import sys
    import time

    with pytest.raises(DataError, match="name a prefix inside the bucket"):
        pack(sprite_data, "s3://genie-test", **CUT)
    uri = "s3://genie-test/sprites"
    pack(sprite_data, uri, num_workers=2, **CUT)
    assert read_manifest(uri)["splits"] == read_manifest(packed)["splits"]
    for split in ("train", "val"):
        want = {key(item): item for item in packed_split(packed, split)}
        got = packed_split(uri, split)
        assert len(got) == len(want) and {key(item) for item in got} == set(want)
        assert all(torch.equal(item["video"], want[key(item)]["video"]) for item in got)
    with pytest.raises(DataError, match="already a packed dataset"):
        pack(sprite_data, uri, **CUT)

    # killed while packing into the store, then run again: the chunks it finished are not uploaded again
    killed = "s3://genie-test/killed"
    allow_http = "import litdata.streaming.downloader as d\nd._OBSTORE_CLIENT_OPTIONS['allow_http'] = True\n"
    script = allow_http + SLOW_PACK.replace("{cut}", repr(CUT))  # the fixture's patch, in the killed process
    proc = subprocess.Popen([sys.executable, "-c", script, str(sprite_data), killed], start_new_session=True)
    deadline = time.time() + 120

    def finished_chunks() -> list[str]:
        try:
            body = s3_store.get_object(Bucket="genie-test", Key="killed/train/.checkpoints/checkpoint-0.json")["Body"]
            return [c["filename"] for c in json.loads(body.read())["chunks"]]
        except Exception:
            return []

    def uploaded_and_listed() -> dict[str, object]:
        listed = finished_chunks()  # litdata's checkpoint may name chunks not uploaded yet (pack trims it)
        return {name: stamp for name, stamp in _objects(s3_store, "killed/train/").items() if name in listed}

    while time.time() < deadline and proc.poll() is None and len(uploaded_and_listed()) < 2:
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = uploaded_and_listed()
    assert len(kept) >= 2 and "genie_pack.json" not in _objects(s3_store, "killed/")
    with caplog.at_level("INFO", logger="genie.data.packed"):
        pack(sprite_data, killed, num_workers=2, chunk_bytes="50KB", **CUT)
    assert "resuming the killed pack" in caplog.text
    after = _objects(s3_store, "killed/train/")
    assert {name: after[name] for name in kept} == kept and "genie_pack.partial.json" not in _objects(
        s3_store, "killed/"
    )
    for split in ("train", "val"):
        want = {key(item) for item in packed_split(packed, split)}
        got = [key(item) for item in packed_split(killed, split, shuffle=False)]
        assert len(got) == len(want) and set(got) == want  # none repeated or missing

    # a shard that never arrived (litdata logs a failed upload and goes on) is a one-line error naming it
    s3_store.delete_object(Bucket="genie-test", Key="sprites/val/chunk-0-0.bin")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(DataError, match=r"s3://genie-test/sprites/val/chunk-0-0.bin: shard missing"):
        packed_split(uri, "val")


def test_a_checkpoint_ahead_of_its_chunks_is_cut_back_to_them(tmp_path, caplog):
    import fsspec

    from genie.data.packed import _trim_checkpoints

    split = tmp_path / "train"
    (split / ".checkpoints").mkdir(parents=True)
    for name in ("chunk-1-0.bin", "chunk-1-1.bin", "chunk-1-3.bin"):  # chunk 2 never arrived
        (split / name).write_bytes(b"x")
    chunks = [{"filename": f"chunk-1-{i}.bin", "chunk_size": 5 + i} for i in range(4)]
    state = {"chunks": chunks, "inputs_done": 26, "samples_written": 26, "next_chunk_index": 4, "done_till_index": 26}
    (split / ".checkpoints" / "checkpoint-1.json").write_text(json.dumps(state))
    (split / ".checkpoints" / "checkpoint-0.json").write_text(json.dumps({**state, "chunks": []}))
    (split / ".checkpoints" / "checkpoint-2.json").write_text(json.dumps({"chunks": [{"name": "odd"}]}))
    with caplog.at_level("WARNING", logger="genie.data.packed"):
        _trim_checkpoints(fsspec.filesystem("file"), str(split))
    cut = json.loads((split / ".checkpoints" / "checkpoint-1.json").read_text())
    assert [c["filename"] for c in cut["chunks"]] == ["chunk-1-0.bin", "chunk-1-1.bin"]
    assert cut["inputs_done"] == cut["samples_written"] == cut["done_till_index"] == 11 and cut["next_chunk_index"] == 2
    assert json.loads((split / ".checkpoints" / "checkpoint-0.json").read_text())["chunks"] == []  # left alone
    assert not (split / ".checkpoints" / "checkpoint-2.json").exists()  # a shape it cannot read: that worker restarts
    assert "names 4 chunks, 2 of them written" in caplog.text
