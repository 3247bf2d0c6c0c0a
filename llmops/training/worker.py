"""One training rank, started by the ``deepspeed`` launcher: ``python -m llmops.training.worker --job job.json``.

The same loop runs pretraining and fine-tuning, on CPU (gloo, fp32) and GPU (NCCL,
bf16): the DeepSpeed engine owns data parallelism, ZeRO partitioning, gradient
accumulation, clipping and checkpoints; this file owns the data order, the loss,
evaluation, the resume logic and the progress/metrics output.

Output contract (the operator and the CLI parse nothing else): rank 0 prints
``[llmops] ...`` lines, appends JSON lines to ``metrics.jsonl``, logs to the MLflow run
named in the job file, and writes ``result.json`` last, when the job is finished.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from llmops.records.training import (
    CheckpointMarker,
    ParameterCount,
    PretrainDataSpec,
    TrainingJobSpec,
    TrainingResult,
)
from llmops.training import checkpoint as ckpt
from llmops.training.data import IGNORE_INDEX, ChatExamples, Schedule, TokenWindows

if TYPE_CHECKING:
    from llmops.registry.tracking import RunLogger, SystemMetrics

METRICS_FILE = "metrics.jsonl"
# bf16 dense peak FLOP/s per GPU, for MFU. Only GPUs listed here get an mfu metric.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
                  "A10": 125e12, "A6000": 155e12}


@dataclass(frozen=True)
class SampleCounts:
    """What the job's data holds (MLflow params and ``result.json`` fields)."""

    train_samples: int
    val_samples: int
    train_tokens_dropped: int | None = None
    """Pretraining: tokens after the last whole window."""
    truncated: int | None = None
    """Fine-tuning: examples cut to ``max_length``."""

    def fields(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class RngState(TypedDict):
    """One rank's random generators, saved next to its checkpoint shards."""

    python: tuple[Any, ...]
    numpy: Any
    torch: Any
    cuda: list[Any] | None


def say(msg: str) -> None:
    print(f"[llmops] {msg}", flush=True)


def lr_factor(step: int, *, steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``steps`` (0-based step)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Worker:
    def __init__(self, job: TrainingJobSpec):
        import deepspeed
        import torch
        from deepspeed.accelerator import get_accelerator

        self.job = job
        self.run_dir = Path(job.run_dir)
        self.loop = job.loop
        self.launch = job.launch
        torch.set_num_threads(self.launch.threads_per_rank)
        deepspeed.init_distributed(timeout=dt.timedelta(seconds=self.launch.timeout_s))
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self.world != self.launch.world_size:
            raise RuntimeError(f"launched with {self.world} ranks, the job expects {self.launch.world_size}")
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        accel = get_accelerator()
        if accel.device_name() == "cuda":
            accel.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        self.is_main = self.rank == 0
        self.tracker: RunLogger | None = None
        self.system_metrics: SystemMetrics | None = None
        self.metrics_path = self.run_dir / METRICS_FILE

    # ---- model and data ---------------------------------------------------------------

    def build_model(self):
        import torch

        from llmops.training.model import build_model

        torch.manual_seed(self.loop.seed)
        return build_model(self.job, training=True)

    def build_data(self) -> tuple[TokenWindows | ChatExamples, TokenWindows | ChatExamples, SampleCounts]:
        data = self.job.data
        if isinstance(data, PretrainDataSpec):
            windows = TokenWindows(Path(data.tokens), "train", data.context_length)
            val_windows = TokenWindows(Path(data.tokens), "validation", data.context_length)
            return windows, val_windows, SampleCounts(len(windows), len(val_windows),
                                                      train_tokens_dropped=windows.dropped_tokens)
        from transformers import AutoTokenizer

        from llmops.training.data import encode_chat_examples, read_pairs, split_pairs

        tok = AutoTokenizer.from_pretrained(self.job.tokenizer)
        train_pairs, val_pairs = split_pairs(read_pairs(Path(data.pairs)), data.validation_fraction, self.loop.seed)
        train = encode_chat_examples(train_pairs, tok, data.max_length)
        val = encode_chat_examples(val_pairs, tok, data.max_length)
        return train, val, SampleCounts(len(train), len(val), truncated=train.truncated + val.truncated)

    def to_tensors(self, batch: tuple[np.ndarray, ...]):
        import torch

        inputs, labels = (torch.from_numpy(a).to(self.device) for a in batch[:2])
        mask = torch.from_numpy(batch[2]).to(self.device) if len(batch) > 2 else None
        return inputs, labels, mask

    def loss_of(self, engine, inputs, labels, mask):
        """Mean next-token cross entropy over labelled positions, and their count."""
        import torch.nn.functional as F

        logits = engine(input_ids=inputs, attention_mask=mask).logits
        loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        count = (labels != IGNORE_INDEX).sum()
        return loss_sum / count.clamp(min=1), count

    # ---- evaluation -------------------------------------------------------------------

    def evaluate(self, engine, val) -> dict[str, float]:
        """Validation loss over the same samples every time: rank r takes r, r+W, ..."""
        import torch

        mb = self.loop.micro_batch_size
        limit = min(len(val), self.loop.eval_batches * mb * self.world)
        ids = np.arange(self.rank, limit, self.world)
        # Every rank runs the same number of forward passes: under ZeRO-3 each forward is a
        # collective (parameter all-gather), so a rank with one batch more would wait forever.
        # A rank that ran out re-reads sample 0 with weight 0.
        n_batches = math.ceil(math.ceil(limit / self.world) / mb)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        engine.eval()
        with torch.no_grad():
            for i in range(n_batches):
                chunk = ids[i * mb:(i + 1) * mb]
                weight = 1.0 if len(chunk) else 0.0
                inputs, labels, mask = self.to_tensors(val.batch(chunk if len(chunk) else np.zeros(1, np.int64)))
                loss, count = self.loss_of(engine, inputs, labels, mask)
                totals += weight * torch.stack([loss.double() * count, count.double()])
        engine.train()
        self.dist.all_reduce(totals)
        val_loss = (totals[0] / totals[1].clamp(min=1)).item()
        return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50.0))}

    # ---- checkpoints ------------------------------------------------------------------

    def rng_state(self) -> RngState:
        import torch

        return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def restore_rng(self, state: RngState) -> None:
        import torch

        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def save(self, engine, step: int, history: dict[str, float]) -> None:
        import torch

        root = self.run_dir / ckpt.CHECKPOINTS
        tag = ckpt.tag_for(step)
        engine.save_checkpoint(str(root), tag=tag, client_state={"step": step, "history": history})
        torch.save(self.rng_state(), root / tag / f"rng_rank{self.rank}.pt")
        self.dist.barrier()  # every rank's shards and RNG are on disk
        if self.is_main:
            CheckpointMarker(step=step, world_size=self.world, zero_stage=self.launch.zero_stage,
                             saved_at=dt.datetime.now(dt.UTC).isoformat()).write(root / tag)
            removed = ckpt.prune(root, self.loop.keep_checkpoints)
            say(f"checkpoint {tag} saved" + (f"; removed {', '.join(p.name for p in removed)}" if removed else ""))
        self.dist.barrier()

    def resume(self, engine) -> tuple[int, dict[str, float]]:
        """Step to start from, and the metric history, from the newest complete checkpoint.

        Rank 0 chooses the checkpoint and tells the others, so ranks on different nodes
        (whose view of a shared filesystem may lag) cannot pick different ones.
        """
        import torch

        root = self.run_dir / ckpt.CHECKPOINTS
        choice: list[Any] = [None]
        if self.is_main:
            newest = ckpt.newest_complete(root)
            partial = ckpt.incomplete_checkpoints(root)
            if newest is None:
                reason = (f"ignoring incomplete checkpoint(s) {', '.join(p.name for p in partial)}"
                          if partial else "no checkpoint in " + str(root))
                say(f"{reason}: starting from step 0")
            else:
                skipped = [p.name for p in partial if p.name > newest[1].name]
                if skipped:
                    say(f"skipping incomplete checkpoint(s) {', '.join(skipped)}")
                choice = [newest[1].name]
        self.dist.broadcast_object_list(choice, src=0)
        if choice[0] is None:
            return 0, {}
        tag_dir = root / choice[0]
        marker = CheckpointMarker.read(tag_dir)
        if marker.world_size != self.world:
            raise RuntimeError(f"checkpoint {tag_dir} was written by {marker.world_size} ranks, this job has "
                               f"{self.world}; relaunch with the same number of ranks")
        path, client = engine.load_checkpoint(str(root), tag=tag_dir.name, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {tag_dir}")
        self.restore_rng(torch.load(tag_dir / f"rng_rank{self.rank}.pt", weights_only=False))
        start = int(client["step"])
        if self.is_main:
            self._truncate_metrics(start)
            say(f"resuming from checkpoint {tag_dir.name} (step {start}, engine step {engine.global_steps})")
        return start, dict(client.get("history") or {})

    def _truncate_metrics(self, step: int) -> None:
        """Forget metrics logged after the checkpoint: the resumed job logs those steps again."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    # ---- output ---------------------------------------------------------------------

    def record(self, step: int, metrics: dict[str, float]) -> None:
        if not self.is_main:
            return
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=step)

    def start_tracking(self, engine, counts: SampleCounts, params: ParameterCount) -> None:
        tracking = self.job.mlflow
        if not self.is_main or tracking is None:
            return
        from llmops.registry.tracking import RunLogger, start_system_metrics

        tracker = self.tracker = RunLogger(tracking.run_id, tracking.tracking_uri)
        self.system_metrics = (start_system_metrics(tracking.run_id, tracking.tracking_uri,
                                                    interval_s=tracking.system_metrics_interval_s)
                               if tracking.system_metrics else None)
        job, launch = self.job.dump(), self.launch
        tracker.log_params({
            "kind": self.job.kind, "world_size": self.world, "zero_stage": launch.zero_stage,
            "precision": launch.precision, "device": launch.device, "loop": job["loop"],
            "model": {k: v for k, v in job["model"].items() if k != "preset"},
            "preset": job["model"].get("preset", {}), "parameters": params.total,
            "trainable_parameters": params.trainable, "data": job["data"], **counts.fields(),
            **({"finetune": job["finetune"]} if job["finetune"] else {}),
        })
        tracker.log_dict(self.job.deepspeed, "config/deepspeed.json")
        tracker.log_dict(job, "config/job.json")
        tracker.log_dataset_inputs({"name": name, "digest": ref.hash, "source": ref.path, "context": "training"}
                                   for name, ref in self.job.inputs.items())

    # ---- the loop -------------------------------------------------------------------

    def run(self) -> None:
        import deepspeed
        import torch

        from llmops.training.model import count_parameters

        loop = self.loop
        model = self.build_model()
        params = count_parameters(model)
        train, val, counts = self.build_data()
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        # Empty groups (LoRA has no trainable 1-D tensor) are left out: ZeRO drops them,
        # and the LR scheduler would then count more groups than the optimizer has.
        groups = [g for g in ({"params": decay, "weight_decay": loop.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=loop.lr, betas=(0.9, 0.95), eps=1e-8)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
            s, steps=loop.steps, warmup=loop.warmup_steps, min_ratio=loop.min_lr_ratio))
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                               config=self.job.deepspeed)
        schedule = Schedule(len(train), loop.micro_batch_size, loop.grad_accum_steps, self.world, loop.seed)
        start, history = self.resume(engine)
        steps = loop.steps
        if self.is_main:
            say(f"{self.job.kind} {self.job.name}: {params.total:,} parameters "
                f"({params.trainable:,} trainable), {self.world} rank(s) on {self.launch.device}, "
                f"ZeRO-{self.launch.zero_stage}, {self.launch.precision}, {counts.train_samples} training "
                f"samples, global batch {schedule.global_batch}, steps {start}->{steps}")
        try:
            self.start_tracking(engine, counts, params)
        except Exception as exc:  # train anyway; metrics.jsonl still has everything
            say(f"WARNING: MLflow tracking is off for this job: {type(exc).__name__}: {exc}")
            self.tracker = None
        if start == 0:
            first = self.evaluate(engine, val)
            history["first_val_loss"] = first["val_loss"]
            self.record(0, first)
            if self.is_main:
                say(f"step 0/{steps} val_loss {first['val_loss']:.4f} val_perplexity {first['val_perplexity']:.1f}")

        engine.train()  # from_pretrained returns eval mode: dropout and activation checkpointing off
        peak = self._peak_flops()
        window_loss = torch.zeros(2, dtype=torch.float64, device=self.device)
        window_tokens, window_start = 0, time.perf_counter()
        for step in range(start, steps):
            for micro in range(loop.grad_accum_steps):
                inputs, labels, mask = self.to_tensors(train.batch(schedule.indices(step, micro, self.rank)))
                loss, count = self.loss_of(engine, inputs, labels, mask)
                engine.backward(loss)
                engine.step()
                window_loss += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64,
                                                                               device=self.device)])
                window_tokens += int(mask.sum()) if mask is not None else inputs.numel()
            done = step + 1
            last = done == steps
            if done % loop.log_every == 0 or last:
                stats = torch.cat([window_loss, torch.tensor([float(window_tokens)], dtype=torch.float64,
                                                             device=self.device)])
                self.dist.all_reduce(stats)
                seconds = time.perf_counter() - window_start
                # The LR of the step just taken (the scheduler has already moved to the next).
                lr = loop.lr * lr_factor(done - 1, steps=steps, warmup=loop.warmup_steps,
                                         min_ratio=loop.min_lr_ratio)
                metrics = {"train_loss": (stats[0] / stats[1]).item(), "lr": lr,
                           "tokens_per_s": stats[2].item() / seconds, "epoch": schedule.epoch_at(done)}
                if peak:  # 6ND: the backward pass runs through frozen (LoRA base) weights too
                    metrics["mfu"] = 6 * params.total * metrics["tokens_per_s"] / (peak * self.world)
                self.record(done, metrics)
                if self.is_main:
                    say(f"step {done}/{steps} train_loss {metrics['train_loss']:.4f} lr {metrics['lr']:.2e} "
                        f"tokens/s {metrics['tokens_per_s']:,.0f}")
                window_loss.zero_()
                window_tokens, window_start = 0, time.perf_counter()
            paused = time.perf_counter()
            if done % loop.eval_every == 0 or last:
                val_metrics = self.evaluate(engine, val)
                history["last_val_loss"] = val_metrics["val_loss"]
                self.record(done, val_metrics)
                if self.is_main:
                    say(f"step {done}/{steps} val_loss {val_metrics['val_loss']:.4f} "
                        f"val_perplexity {val_metrics['val_perplexity']:.1f}")
            if done % loop.checkpoint_every == 0 or last:
                self.save(engine, done, history)
            window_start += time.perf_counter() - paused  # evaluation and saving are not training throughput
        self.finish(steps, history, params, counts)

    def _peak_flops(self) -> float | None:
        import torch

        if self.device.type != "cuda" or self.launch.precision != "bf16":
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), None)

    def _log_final(self, tracker: RunLogger, result: TrainingResult, steps: int) -> None:
        from llmops.training.plots import loss_curve

        png = loss_curve(self.metrics_path, self.run_dir / "loss_curve.png",
                         title=f"{self.job.kind} {self.job.name}")
        tracker.log_artifact(png)
        tracker.log_artifact(self.metrics_path)
        log_file = self.run_dir / "train.log"  # as far as written: the launcher's last lines come after
        if log_file.exists():
            tracker.log_artifact(log_file)
        tracker.log_metrics({k: v for k, v in (("first_val_loss", result.first_val_loss),
                                               ("final_val_loss", result.final_val_loss))
                             if v is not None}, step=steps)
        if self.system_metrics is not None:
            self.system_metrics.stop()
        tracker.end("FINISHED")

    def finish(self, steps: int, history: dict[str, float], params: ParameterCount, counts: SampleCounts) -> None:
        self.dist.barrier()
        if not self.is_main:
            return
        newest = ckpt.newest_complete(self.run_dir / ckpt.CHECKPOINTS)
        result = TrainingResult(
            kind=self.job.kind, name=self.job.name, key=self.job.key, steps=steps,
            first_val_loss=history.get("first_val_loss"), final_val_loss=history.get("last_val_loss"),
            checkpoint=str(newest[1]) if newest else None, parameters=params, world_size=self.world,
            mlflow_run_id=self.job.mlflow.run_id if self.job.mlflow else None, **asdict(counts))
        if self.tracker is not None:
            try:
                self._log_final(self.tracker, result, steps)
            except Exception as exc:  # the model is trained: a tracking outage must not fail the job
                say(f"WARNING: could not log the final artifacts to MLflow: {type(exc).__name__}: {exc}")
        result.write(self.run_dir / TrainingResult.NAME)
        first, final = result.first_val_loss, result.final_val_loss
        say(f"finished {steps} steps: validation loss {first if first is None else round(first, 4)} -> "
            f"{final if final is None else round(final, 4)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One llmops training rank (started by the deepspeed launcher).")
    parser.add_argument("--job", required=True, type=Path, help="job.json written by `llmops train`")
    args = parser.parse_args(argv)
    try:
        from llmops.training.process import set_parent_death_signal

        set_parent_death_signal()  # die with the launcher: no orphaned ranks
    except ImportError:
        pass
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    worker = Worker(TrainingJobSpec.read(args.job))
    try:
        worker.run()
    except BaseException:
        if worker.is_main and worker.tracker is not None:
            if worker.system_metrics is not None:
                worker.system_metrics.stop()
            worker.tracker.end("FAILED")  # a relaunch sets the same run back to RUNNING
        raise
    finally:
        if worker.dist.is_initialized():
            worker.dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()  # an error raises: Python prints it and exits 1, as usual
    # Done: checkpoints and result.json are on disk, the process group is destroyed and the
    # MLflow run is ended. Leave without interpreter finalisation: destroying the C++ threads
    # of the communication and ZeRO-3 layers at exit has aborted a rank that had finished
    # ("terminate called without an active exception", SIGABRT), which the launcher reports
    # as a failed job (seen once in a ZeRO-3 test on 2 CPU ranks).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
