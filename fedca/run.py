"""``run(cfg, out_dir)``: one experiment from a validated config to a complete run folder.

Never reads Hydra state or globals; the CLI and the tests both call it. With ``resume=true``
an existing folder is continued from its last checkpoint (or left alone when complete and
``skip_done=true``); SIGINT/SIGTERM end the run after the current round is written and
checkpointed, marking it interrupted.
"""

import errno
import json
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

import fedca
from fedca.aggregators.registry import build_aggregator
from fedca.config.moved import moved_into_place
from fedca.config.protocol import hashed_record
from fedca.config.schema import RunConfig
from fedca.config.validate import validate
from fedca.data.fed_data import load_fed_data
from fedca.errors import FedcaError
from fedca.federation.local_train import LocalSettings, choose_kernel
from fedca.federation import distributed
from fedca.federation.population import Population
from fedca.federation.store import choose_store
from fedca.federation.privacy import PrivacySettings
from fedca.federation.unseen import UnseenSettings
from fedca.federation.simulate import Simulation, SimulationSettings
from fedca.models.backbones import build_backbone
from fedca.federation.warm_start import WarmStart, apply_warm_start, source_from_checkpoint
from fedca.results.checkpoint import CHECKPOINT, SELECTED, load_checkpoint, save_checkpoint
from fedca.results.run_folder import RunFolder, read_status, select_rounds
from fedca.schedules.registry import build_schedule
from fedca.seeding import generator

RESUMABLE_DIFFERENCES = ("progress", "threads", "kernel", "resume", "skip_done", "checkpoint_every", "save_selected",
                         "tracking")


class RunInterrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after writing and checkpointing its last round."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an input error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise FedcaError("device=cuda but no CUDA device is available; use device=auto or device=cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def git_commit() -> str | None:
    """The commit of the source checkout fedca runs from, if it is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(fedca.__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def protocol_record(cfg: RunConfig, data_meta: dict, reveals, warm: dict | None = None) -> dict:
    """Everything that changes the meaning of a number, for summary.json: every protocol field and
    their ``hash``, then what else a reader of the number needs (data checksum, initialisation,
    what the server sees, privacy, unseen clients, warm start)."""
    return {**hashed_record(cfg), "dataset": cfg.dataset.name, "file_sha256": data_meta.get("file_sha256"),
            "official_checksum_match": data_meta.get("official_checksum_match"), "model_init": cfg.model.init, "user_init": cfg.model.user_init,
            "server_sees": list(reveals), "merge": "on receipt (the same state is evaluated and trained on)",
            "privacy": {**asdict(cfg.privacy), "noised": "the uploaded (V, Theta): clipped update + Gaussian noise; "
                                                          "sample counts and server_sees items are sent as they are"}
            if cfg.privacy.clip is not None or cfg.privacy.noise_multiplier > 0 else None,
            "unseen_clients": {"share": cfg.eval.holdout_clients, "adapt_epochs": cfg.eval.adapt_steps,
                               "cold_start": "Aggregator.cold_start, then local fine-tuning on own training data"}
            if cfg.eval.holdout_clients > 0 else None, "warm_start": warm}


def simulation_settings(cfg: RunConfig) -> SimulationSettings:
    """The round-loop and local-training settings of ``cfg``."""
    epochs = cfg.model.local_epochs if cfg.model.local_epochs is not None else cfg.local_epochs
    local = LocalSettings(epochs=epochs, lr_embedding=cfg.model.lr_embedding,
                          lr_structure=cfg.model.lr_structure, weight_decay=cfg.model.weight_decay,
                          early_stop=cfg.protocol.early_stop == "official",
                          threshold=cfg.protocol.early_stop_threshold, optimizer=cfg.model.optimizer,
                          item_lr_eta=cfg.model.item_lr_eta, kernel=cfg.kernel, lr_user=cfg.model.lr_user,
                          item_lr_offset=cfg.model.item_lr_offset)
    return SimulationSettings(rounds=cfg.rounds, clients_sample_ratio=cfg.clients_sample_ratio,
                              num_train_negatives=cfg.protocol.num_train_negatives, batch_size=cfg.batch_size,
                              local=local, eval_every=cfg.eval_every, ks=list(cfg.protocol.ks),
                              ties=cfg.protocol.ties, eval_mode=cfg.protocol.eval_mode,
                              privacy=PrivacySettings(clip=cfg.privacy.clip,
                                                      noise_multiplier=cfg.privacy.noise_multiplier),
                              unseen=UnseenSettings(share=cfg.eval.holdout_clients, adapt_epochs=cfg.eval.adapt_steps,
                                                    every_eval=cfg.eval.unseen_every_eval))


def _comparable(cfg: RunConfig) -> dict:
    """The config fields that must match for a checkpoint to be resumed."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    return {key: value for key, value in plain.items() if key not in RESUMABLE_DIFFERENCES}


def _saved_config_agrees(saved, current, default) -> bool:
    """Whether a checkpoint's config (``saved``) matches this run's (``current``).

    A field the checkpoint lacks was added to fedca after it was written; it agrees while this
    run leaves it at its schema ``default``, since the older code behaved as that default does.
    """
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return saved == current
    default = default if isinstance(default, dict) else {}
    return set(saved) <= set(current) and all(
        _saved_config_agrees(saved[key], value, default.get(key)) if key in saved
        else key in default and value == default[key]
        for key, value in current.items())


class _StopOnSignal:
    """While active, SIGINT/SIGTERM only set ``requested``; the round loop stops at a round boundary."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _warm_start(cfg: RunConfig, population: Population, data) -> WarmStart | None:
    """Load ``init.from_run``'s checkpoint into ``population`` (None without a warm start)."""
    if cfg.init.from_run is None:
        return None
    source_dir = Path(cfg.init.from_run)
    name = CHECKPOINT if cfg.init.checkpoint == "final" else SELECTED
    if cfg.init.checkpoint == "final" and read_status(source_dir) != "complete":
        raise FedcaError(f"init.from_run={source_dir}: the run is not complete (status {read_status(source_dir)!r})")
    state = load_checkpoint(source_dir, name)
    if state is None:
        hint = "" if name == CHECKPOINT else " (run the source with save_selected=true)"
        raise FedcaError(f"init.from_run={source_dir}: no {name} there{hint}")
    return apply_warm_start(population, data, source_from_checkpoint(state, str(source_dir)), cfg.init.transfer,
                            str(source_dir), cfg.init.checkpoint)


def _round_zero(simulation: Simulation) -> dict:
    """The record of the warm-started state before any training (round 0)."""
    started = time.perf_counter()
    metrics = simulation.evaluate()
    seconds = time.perf_counter() - started
    return {"round": 0, "train_loss": float("nan"), "local_epochs_mean": 0.0, "schedule": {}, "stats": {},
            "train_seconds": 0.0, "agg_seconds": 0.0, "eval_seconds": seconds, "seconds": seconds, **metrics}


def _trained_rows(rows: list) -> list:
    """The rows of rounds that trained (round 0 of a warm start is the starting point, never selected)."""
    return [row for row in rows if row["round"] >= 1]


def _round_zero_metrics(rows: list) -> dict | None:
    zero = [row for row in rows if row["round"] == 0]
    if not zero:
        return None
    return {row["split"]: {key: value for key, value in row.items() if key.startswith(("hr@", "ndcg@"))}
            for row in zero}


def _selected_round(rows: list, cfg: RunConfig) -> int:
    metric = f"hr@{cfg.protocol.select_k}"
    return select_rounds(_trained_rows(rows), cfg.protocol.select_by, metric)["selected"]["round"]


def run(cfg: RunConfig, out_dir: Path, tracker=None) -> dict:
    """Run the experiment ``cfg`` and write its folder ``out_dir``; return the summary.

    ``tracker`` (e.g. fedca.results.tracking.MlflowTracker) is told the config, every round
    record and the end. Running out of memory or disk space ends the run with a one-line
    FedcaError naming the cause and what to change."""
    cfg = validate(cfg)
    out_dir = Path(out_dir)
    try:
        ranks = distributed.ranks()
        if ranks is not None and ranks.rank > 0:  # rank 0 writes the run folder; the others write a scratch one
            with tempfile.TemporaryDirectory(prefix=f"fedca-rank{ranks.rank}-") as scratch:
                return _run(cfg, out_dir, None, Path(scratch))
        return _tracked(cfg, out_dir, tracker)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise FedcaError(f"out of memory ({type(exc).__name__}): lower clients_sample_ratio, batch_size or "
                         f"model.latent_dim, or use another device") from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise FedcaError(f"disk full while writing {exc.filename or out_dir}: free space or set hydra.run.dir "
                         f"elsewhere, then resume=true (the last checkpoint is intact)") from None


def _tracked(cfg: RunConfig, out_dir: Path, tracker) -> dict:
    """``_run``, closing the tracker's run as FINISHED, KILLED (interrupted) or FAILED."""
    if tracker is None:
        return _run(cfg, out_dir, None, out_dir)
    try:
        summary = _run(cfg, out_dir, tracker, out_dir)
    except BaseException as exc:
        tracker.end(out_dir, "KILLED" if isinstance(exc, (RunInterrupted, KeyboardInterrupt)) else "FAILED")
        raise
    tracker.end(out_dir, "FINISHED")
    return summary


def _run(cfg: RunConfig, out_dir: Path, tracker, write_dir: Path) -> dict:
    """The run of ``out_dir`` (its checkpoint and status are read there), writing ``write_dir``
    (``out_dir`` itself, except on a torchrun rank other than 0)."""
    checkpoint = load_checkpoint(out_dir) if cfg.resume else None
    if checkpoint is not None and not _saved_config_agrees(moved_into_place(checkpoint["config"]), _comparable(cfg),
                                                           OmegaConf.to_container(OmegaConf.structured(RunConfig))):
        raise FedcaError(f"{out_dir} holds a checkpoint of a different config; resume with the same "
                         f"overrides or choose another hydra.run.dir")
    if cfg.resume and cfg.skip_done and read_status(out_dir) == "complete":
        return json.loads((out_dir / "summary.json").read_text())
    device = resolve_device(cfg.device)
    started = time.time() - (checkpoint["wall_seconds"] if checkpoint else 0.0)
    data = load_fed_data(cfg.dataset, cfg.protocol, cfg.seed, progress=cfg.progress)
    backbone = build_backbone(cfg.model.name, list(cfg.model.mlp_layers), cfg.model.latent_dim)
    kernel = choose_kernel(simulation_settings(cfg).local, backbone, device)
    aggregator = build_aggregator(cfg.agg, cfg.model.mlp_layers)
    run_id = checkpoint["run_id"] if checkpoint else uuid.uuid4().hex[:12]
    folder = RunFolder(write_dir, run_id=run_id, protocol_columns=hashed_record(cfg))
    folder.write_config(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    store = choose_store(cfg.store, data.num_users, data.num_items, cfg.model.latent_dim, torch.float32,
                         type(aggregator).one_table)
    population = Population.initial(data.num_users, data.num_items, cfg.model.latent_dim, backbone,
                                    init=cfg.model.init, user_init=cfg.model.user_init,
                                    generator=generator(cfg.seed, "init"), device=device, store=store,
                                    folder=Path(cfg.store.dir) / write_dir.name if cfg.store.dir else write_dir)
    warm = _warm_start(cfg, population, data)
    simulation = Simulation(data, population, backbone, aggregator, build_schedule(cfg), simulation_settings(cfg),
                            cfg.seed, server_start=(warm.server_items, warm.server_mlp) if warm else None)
    if checkpoint:
        simulation.load_state_dict(checkpoint["simulation"])
        folder.rows = [row for row in checkpoint["rows"] if row["round"] <= simulation.next_round]
    folder.write_status("running")
    if tracker is not None:
        tracker.start(out_dir, OmegaConf.to_container(OmegaConf.structured(cfg)))
    if warm and not checkpoint:
        zero = _round_zero(simulation)
        folder.add_round(zero)
        if tracker is not None:
            tracker.log_round(zero)

    def save(name: str = CHECKPOINT) -> None:
        save_checkpoint(write_dir, {"config": _comparable(cfg), "run_id": run_id, "rows": folder.rows,
                                  "wall_seconds": time.time() - started, "simulation": simulation.state_dict(),
                                  "raw_user_ids": data.raw_user_ids, "raw_item_ids": data.raw_item_ids}, name)

    k = cfg.protocol.select_k
    bar = tqdm(total=cfg.rounds, initial=simulation.next_round, desc=f"{cfg.dataset.name}/{cfg.agg.name}",
               disable=not cfg.progress, dynamic_ncols=True)
    try:
        with _StopOnSignal() as stop:
            while not simulation.finished:
                record = simulation.run_round()
                folder.add_round(record)
                if tracker is not None:
                    tracker.log_round(record)
                bar.update(1)
                if "val" in record:
                    bar.set_postfix({f"val_hr@{k}": f"{record['val'][f'hr@{k}']:.4f}",
                                     f"val_ndcg@{k}": f"{record['val'][f'ndcg@{k}']:.4f}"})
                if "test" in record and _selected_round(folder.rows, cfg) == record["round"]:
                    folder.write_user_metrics(record["round"], simulation.test_users.clients,
                                              simulation.test_users.values)
                    if cfg.save_selected:
                        save(SELECTED)
                every = cfg.checkpoint_every
                if simulation.finished or stop.requested or (every and simulation.next_round % every == 0):
                    save()
                if stop.requested and not simulation.finished:
                    folder.write_status("interrupted", round=simulation.next_round)
                    raise RunInterrupted(f"interrupted after round {simulation.next_round}; "
                                         f"continue with resume=true hydra.run.dir={out_dir}")
    except KeyboardInterrupt:
        folder.write_status("interrupted", round=simulation.next_round)
        raise
    finally:
        bar.close()
    summary = {"run_id": run_id, "dataset": cfg.dataset.name, "model": cfg.model.name,
               "agg": cfg.agg.name, "seed": cfg.seed, "rounds": cfg.rounds, "select_metric": f"hr@{k}",
               **select_rounds(_trained_rows(folder.rows), cfg.protocol.select_by, f"hr@{k}"),
               "wall_seconds": time.time() - started, "device": str(device), "kernel": kernel, "store": store,
               "num_users": data.num_users, "num_items": data.num_items,
               "synthetic": bool(data.meta.get("synthetic", False)),
               "protocol": protocol_record(cfg, data.meta, aggregator.reveals, warm.record if warm else None),
               "round_zero": _round_zero_metrics(folder.rows),
               "fedca_version": fedca.__version__, "git_commit": git_commit()}
    folder.write_summary(summary)
    folder.write_status("complete")
    return summary
