"""KD training overhead: DLLM2Rec student epoch time / plain student epoch time, same config, and peak memory.

Budget (DESIGN.md): KD / plain <= 1.2x, goal <= 1.1x, artifacts precomputed. The teacher is SYNTHETIC (popularity +
noise top-K with the target first, random item text embeddings of width --d-llm, 576 = SmolLM2-135M's hidden size):
the overhead does not depend on what the teacher knows, only on K and d_llm.

Time: the plain model (RecBole's own SASRec/GRU4Rec/BERT4Rec with RecBole's Trainer) and the KD student (KDTrainer)
are trained in ONE process, one batch each in turn, so both see the same machine load (the development machine is
shared); per-batch seconds include data loading, forward, backward and the optimizer step. --batches timed batches per
mode (0 = a whole epoch) after --warmup untimed ones. Memory: peak RSS of a fresh subprocess per mode (2 batches).
Serving (after the timed batches): full-ranking users/s on the test split of the plain model, the KD student as
trained (ED computes ``g(z)`` for the whole table in every forward) and the same student folded (``fold_teacher``:
what is served), --serving-repeats rounds, the three models in turn within each round.

    .venv/bin/python benchmarks/bench_kd_overhead.py --help
    .venv/bin/python benchmarks/bench_kd_overhead.py --max-len 10 --batches 10      # CPU, a few minutes
    .venv/bin/python benchmarks/bench_kd_overhead.py --batches 0 --gpu-id 0        # a whole epoch on a GPU
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDENT_PARENT = {"KDSASRec": "SASRec", "KDGRU4Rec": "GRU4Rec", "KDBERT4Rec": "BERT4Rec"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="KDSASRec", choices=sorted(STUDENT_PARENT))
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--max-len", type=int, default=50, help="MAX_ITEM_LIST_LENGTH (RecBole default 50)")
    parser.add_argument("--batch-size", type=int, default=2048, help="train_batch_size (RecBole default 2048)")
    parser.add_argument("--rd-topk", type=int, default=10)
    parser.add_argument("--d-llm", type=int, default=576, help="width of the synthetic item text embeddings")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per measurement; 0 = whole epoch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before timing")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--gpu-id", default="", help="'' = CPU (default); e.g. 0 for the first GPU")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch default)")
    parser.add_argument("--detect-anomaly", action="store_true",
                        help="time with autograd's anomaly detection on, as every run before commit 3227390 was "
                             "(RecBole's sine.py switches it on at import; compat now switches it off)")
    parser.add_argument("--serving-repeats", type=int, default=5,
                        help="rounds of full-ranking throughput on the test split: plain, KD, KD folded (0 = skip)")
    parser.add_argument("--out", default="", help="write the summary JSON here")
    parser.add_argument("--_mode", choices=["plain", "kd"], help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def config_dict(args, kd: bool, artifact: str) -> dict:
    return {
        "gpu_id": args.gpu_id,
        "seed": args.seed,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "train_batch_size": args.batch_size,
        "show_progress": False,
        "epochs": 1,
        "kd_method": "dllm2rec" if kd else "none",
        "teacher": artifact if kd else None,
        "rd_topk": args.rd_topk,
    }


def write_artifact(train_dataset, path: str, K: int, d_llm: int, seed: int) -> str:
    import torch

    from recbole_llmkd.data.artifacts import ArtifactWriter, dataset_example_keys, dataset_metadata

    generator = torch.Generator().manual_seed(seed)
    n_rows, n_items = len(train_dataset.inter_feat), train_dataset.item_num
    targets = train_dataset.inter_feat[train_dataset.iid_field]  # [N]
    popularity = torch.log1p(torch.bincount(targets, minlength=n_items).float())  # [n_items]
    metadata = dataset_metadata(train_dataset, key_history=10, score_kind="logit", teacher={"name": "synthetic"})
    writer = ArtifactWriter(path, metadata, splits={"train": n_rows}, K=K, overwrite=True)
    keys = torch.from_numpy(dataset_example_keys(train_dataset, 10))
    for start in range(0, n_rows, 8192):
        end = min(n_rows, start + 8192)
        noisy = popularity[None, :] + torch.randn(end - start, n_items, generator=generator)  # [n, n_items]
        noisy[:, 0] = -1e9
        noisy[torch.arange(end - start), targets[start:end]] = 1e9
        scores, topk = noisy.topk(K, dim=1)  # [n, K]
        scores = torch.where(scores > 1e8, scores.new_full((), 20.0), scores)
        writer.write_chunk("train", start, {"key": keys[start:end], "topk_ids": topk, "topk_scores": scores})
    text_emb = torch.randn(n_items, d_llm, generator=generator)
    text_emb[0] = 0.0
    writer.write_global("item_text_emb", text_emb)
    return str(writer.finalize())


def artifact_path(args, workdir: str) -> str:
    return os.path.join(workdir, f"teacher-{args.dataset}-{args.max_len}-K{args.rd_topk}-{args.d_llm}.safetensors")


def prepared_run(args, kd: bool, artifact: str):
    """The plain run (RecBole's own model, e.g. SASRec, with RecBole's Trainer: the real baseline) or the KD run (the
    student with KDTrainer, the teacher fields attached), built by ``recbole_llmkd.run.prepare`` (RecBole's seeding)."""
    from recbole_llmkd.config import Config
    from recbole_llmkd.run import prepare

    model_name = args.model if kd else STUDENT_PARENT[args.model]
    run = prepare(Config(model_name, args.dataset, config_dict=config_dict(args, kd, artifact if kd else None)))
    if kd:
        run.trainer.attach_teacher_fields(run.train_data)
    return run


class FirstBatches:
    """The first ``n`` batches of a RecBole train loader (all of them when n = 0)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n
        self.shuffle = loader.shuffle

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if self.n and index >= self.n:
                return
            yield batch

    def __len__(self):
        return min(self.n, len(self.loader)) if self.n else len(self.loader)


def measure(args) -> dict:
    """One measurement in this process: build data (+ artifact), train warmup + timed batches."""
    import torch

    sys.path.insert(0, REPO_ROOT)
    import recbole_llmkd  # noqa: F401

    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(args._workdir)
    kd = args._mode == "kd"
    artifact = artifact_path(args, args._workdir)
    if kd and not os.path.exists(artifact):
        raise FileNotFoundError(f"{artifact} missing: the parent process writes it first")
    run = prepared_run(args, kd, artifact)
    config, train_data, model, trainer = run.config, run.train_data, run.model, run.trainer
    torch.autograd.set_detect_anomaly(args.detect_anomaly)
    if args.warmup:
        trainer._train_epoch(FirstBatches(train_data, args.warmup), 0)
    timed = FirstBatches(train_data, args.batches)
    if config["device"].type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # Per-batch times: timestamps taken after every optimizer step (data loading included).
    stamps = []
    optimizer_step = trainer.optimizer.step

    def timed_step(*step_args, **step_kwargs):
        result = optimizer_step(*step_args, **step_kwargs)
        if config["device"].type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return result

    trainer.optimizer.step = timed_step
    start = time.perf_counter()
    trainer._train_epoch(timed, 1)
    seconds = time.perf_counter() - start
    n_batches = len(timed)
    batch_seconds = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    result = {
        "mode": args._mode,
        "seconds": seconds,
        "batches": n_batches,
        "batch_seconds": batch_seconds,
        "epoch_batches": len(train_data),
        "epoch_seconds_est": seconds / n_batches * len(train_data),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(config["device"]),
        "torch_threads": torch.get_num_threads(),
    }
    if config["device"].type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    return result


def monitored_kd_loss(trainer):
    """A KD student's per-batch loss as ``KDTrainer`` computes it in training: the model's loss, then its KD terms
    through the trainer's ``kd_monitor`` (``KDMonitoring._train_epoch``)."""

    def loss(interaction):
        losses = trainer.model.calculate_loss(interaction)
        trainer.kd_monitor.update(trainer.model.kd_terms)
        return losses

    return loss


def interleaved_times(args, workdir: str) -> dict:
    """Plain and KD trainers in ONE process, one batch each in turn (plain, KD, plain, KD, ...), so both see the
    same machine load: per-batch seconds of each (data loading, forward, backward and optimizer step)."""
    import torch

    sys.path.insert(0, REPO_ROOT)
    import recbole_llmkd  # noqa: F401

    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(workdir)
    artifact = artifact_path(args, workdir)
    runs, test_data = {}, {}
    for mode in ("plain", "kd"):
        kd = mode == "kd"
        run = prepared_run(args, kd, artifact)
        config, train_data, model, trainer = run.config, run.train_data, run.model, run.trainer
        loss_func = monitored_kd_loss(trainer) if kd else model.calculate_loss
        runs[mode] = (config, model, trainer, loss_func, iter(train_data), len(train_data))
        test_data[mode] = run.test_data
    torch.autograd.set_detect_anomaly(args.detect_anomaly)
    n_batches = args.batches or min(n for *_, n in runs.values())
    times = {"plain": [], "kd": []}
    for index in range(args.warmup + n_batches):
        for mode, (config, model, trainer, loss_func, batches, _) in runs.items():
            model.train()
            start = time.perf_counter()
            interaction = next(batches).to(config["device"])
            trainer.optimizer.zero_grad()
            losses = loss_func(interaction)
            loss = sum(losses) if isinstance(losses, tuple) else losses
            loss.backward()
            trainer.optimizer.step()
            if config["device"].type == "cuda":
                torch.cuda.synchronize()
            if index >= args.warmup:
                times[mode].append(time.perf_counter() - start)
    serving = serving_throughput(runs["plain"][1], runs["kd"][1], test_data["plain"], runs["plain"][0]["device"],
                                 args.serving_repeats)
    return {"times": times, "epoch_batches": runs["plain"][5], "device": str(runs["plain"][0]["device"]),
            "torch_threads": torch.get_num_threads(), "anomaly_detection": torch.is_anomaly_enabled(),
            "serving": serving}


def serving_throughput(plain_model, kd_model, test_data, device, repeats: int) -> dict:
    """Full-ranking users/s on ``test_data`` of the plain model, the KD student as trained and the same student
    folded (a copy, ``fold_teacher``): ``repeats`` rounds, the three in turn within a round (same machine load);
    the medians and the ratios to the plain model. The folded copy's scores are checked against the unfolded ones."""
    import copy

    import torch

    from recbole_llmkd.measure import full_ranking_throughput

    if repeats <= 0:
        return {}
    folded_model = copy.deepcopy(kd_model)
    folded_model.fold_teacher()
    models = {"plain": plain_model, "kd": kd_model, "kd_folded": folded_model}
    batch = next(iter(test_data))[0].to(device)
    kd_model.eval(), folded_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded_model.full_sort_predict(batch), kd_model.full_sort_predict(batch),
                                   rtol=1e-4, atol=1e-4)
    users_per_s = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            users_per_s[name].append(full_ranking_throughput(model, test_data, device)["throughput_users_per_s"])
    medians = {name: statistics.median(values) for name, values in users_per_s.items()}
    return {"users_per_s": users_per_s, "median_users_per_s": medians,
            "kd_over_plain": medians["kd"] / medians["plain"],
            "kd_folded_over_plain": medians["kd_folded"] / medians["plain"]}


def prepare_artifact(args, workdir: str) -> None:
    sys.path.insert(0, REPO_ROOT)
    import recbole_llmkd  # noqa: F401

    from recbole_llmkd.config import Config
    from recbole_llmkd.run import prepare_data

    os.chdir(workdir)
    config = Config(args.model, args.dataset, config_dict=config_dict(args, False, None))
    train_data = prepare_data(config).train_data
    write_artifact(train_data._dataset, artifact_path(args, workdir), args.rd_topk, args.d_llm, args.seed)


def main(argv=None):
    args = parse_args(argv)
    args.out = os.path.abspath(args.out) if args.out else ""  # the timing runs chdir into a temporary directory
    if args._mode:
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="bench_kd_") as workdir:
        prepare_artifact(args, workdir)
        timing = interleaved_times(args, workdir)
        # Peak memory: one fresh subprocess per mode (a process's peak RSS cannot be split between two models).
        results = {}
        for mode in ("plain", "kd"):
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), *argv, "--batches", "2", "--warmup", "0",
                 "--_mode", mode, "--_workdir", workdir],
                check=True, capture_output=True, text=True,
            )
            line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
            results[mode] = json.loads(line[len("RESULT "):])
    per_batch = timing["times"]
    plain_med, kd_med = statistics.median(per_batch["plain"]), statistics.median(per_batch["kd"])
    plain_min, kd_min = min(per_batch["plain"]), min(per_batch["kd"])
    pair_ratios = [k / p for p, k in zip(per_batch["plain"], per_batch["kd"])]
    summary = {
        "model": args.model,
        "plain_model": STUDENT_PARENT[args.model],
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "out"},
        "timed_batches_per_mode": len(per_batch["plain"]),
        "plain_s_per_batch": {"median": plain_med, "min": plain_min, "all": per_batch["plain"]},
        "kd_s_per_batch": {"median": kd_med, "min": kd_min, "all": per_batch["kd"]},
        "ratio_of_medians": kd_med / plain_med,
        "ratio_of_mins": kd_min / plain_min,
        "median_of_pair_ratios": statistics.median(pair_ratios),
        "plain_peak_rss_mib": results["plain"]["peak_rss_mib"],
        "kd_peak_rss_mib": results["kd"]["peak_rss_mib"],
        "epoch_batches": timing["epoch_batches"],
        "device": timing["device"],
        "torch_threads": timing["torch_threads"],
        "anomaly_detection": timing["anomaly_detection"],
        "serving": timing["serving"],
    }
    results = {mode: [result] for mode, result in results.items()}
    for key in ("peak_cuda_mib", "gpu"):
        if key in results["plain"][0]:
            summary[f"plain_{key}"] = results["plain"][0][key]
            summary[f"kd_{key}"] = results["kd"][0][key]
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
