"""Train the character-level transformer of examples/charlm.py on Pride and Prejudice (ch. 1-18).

    python examples/train_charlm.py            # full run: see examples/README.md for time and loss
    python examples/train_charlm.py --quick    # smoke test, a few seconds of training

Plain PyTorch: AdamW on random 64-character windows of the first 90% of the text, linear warmup
then cosine decay. At the end it prints the wall time, the loss per character on dataset()'s
train and test windows (the sets the loss landscape uses) next to the text's unigram entropy, and
writes a checkpoint in the tool's format, {"state_dict", "epoch", "acc"}, plus the config that
made it, to examples/charlm_out/model.t7.
"""
import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # charlm.py sits next to this file
import charlm  # noqa: E402

# ----------------------------------------------------------------------------- defaults
STEPS = 800           # optimizer steps of the full run
QUICK_STEPS = 100     # --quick: enough to see the loss fall and to write a checkpoint
BATCH_SIZE = 64       # windows per step: 64 x 64 = 4,096 characters
LR = 1e-2             # peak AdamW learning rate (at 400 steps 3e-3 and 6e-3 were worse; at 800, 2e-2)
WARMUP_STEPS = 50     # linear warmup, then cosine decay to LR / 10
WEIGHT_DECAY = 0.1    # on weight matrices and embeddings only, not on biases or LayerNorms
SEED = 1337           # seeds the initial weights and the order of the windows
THREADS = 1           # torch intra-op threads. Not 2, on a 2-core machine: when anything else runs,
                      # 2 OpenMP threads wait on each other and a step takes 10x longer (README)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "charlm_out", "model.t7")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = STEPS
    batch_size: int = BATCH_SIZE
    lr: float = LR
    warmup_steps: int = WARMUP_STEPS
    weight_decay: float = WEIGHT_DECAY
    seed: int = SEED
    threads: int = THREADS
    out: str = OUT


def parse_config(argv=None):
    """Command line -> a validated TrainConfig (argparse exits with code 2 on a bad value)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps (default: {STEPS}, {QUICK_STEPS} with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke test: train only a few steps (default: off)")
    p.add_argument("--batch_size", type=int, default=BATCH_SIZE, help=f"windows per step (default: {BATCH_SIZE})")
    p.add_argument("--lr", type=float, default=LR, help=f"peak learning rate (default: {LR})")
    p.add_argument("--seed", type=int, default=SEED, help=f"random seed (default: {SEED})")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads (default: {THREADS})")
    p.add_argument("--out", default=OUT, help="checkpoint path (default: examples/charlm_out/model.t7)")
    a = p.parse_args(argv)
    steps = a.steps if a.steps is not None else (QUICK_STEPS if a.quick else STEPS)
    for name, value in (("--steps", steps), ("--batch_size", a.batch_size), ("--threads", a.threads)):
        if value < 1:
            p.error(f"{name} must be at least 1, got {value}")
    if not a.lr > 0:
        p.error(f"--lr must be positive, got {a.lr}")
    return TrainConfig(steps=steps, batch_size=a.batch_size, lr=a.lr, warmup_steps=min(WARMUP_STEPS, steps // 4),
                       seed=a.seed, threads=a.threads, out=a.out)


# ----------------------------------------------------------------------------- training
def sample_batch(ids, batch_size, block_size, gen):
    """Random windows of `ids`: inputs (B, T) and targets (B, T), shifted by one character."""
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=gen)  # (B,)
    windows = ids[starts[:, None] + torch.arange(block_size + 1)]                 # (B, T+1)
    return windows[:, :-1], windows[:, 1:]


def make_optimizer(net, lr, weight_decay):
    """AdamW that decays matrices and embeddings (dim >= 2) but not biases and LayerNorm gains."""
    decay = [p for p in net.parameters() if p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


def lr_at(step, cfg):
    """Learning rate at `step` (0-based): linear warmup to cfg.lr, then cosine decay to cfg.lr / 10."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)  # 0 -> 1
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(net, train_ids, cfg, log=print):
    """Run cfg.steps AdamW steps on random windows of `train_ids`; returns the last step's loss."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(net, cfg.lr, cfg.weight_decay)
    criterion = charlm.loss()
    net.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x, y = sample_batch(train_ids, cfg.batch_size, net.cfg.block_size, gen)
        loss = criterion(net(x), y)  # mean nats per character
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"step {step:4d}  lr {lr_at(step, cfg):.2e}  train loss {loss.item():.3f} nats/char")
    return loss.item()


@torch.no_grad()
def evaluate(net, x, y, batch_size=128):
    """Mean loss (nats/char) and the mean of each charlm.metrics() over windows x, y (N, T)."""
    net.eval()
    criterion, metrics = charlm.loss(), charlm.metrics()
    totals = dict.fromkeys(["loss", *metrics], 0.0)
    for start in range(0, len(x), batch_size):
        out, yb = net(x[start:start + batch_size]), y[start:start + batch_size]  # (b, T, V), (b, T)
        totals["loss"] += criterion(out, yb).item() * len(yb)  # every window has T characters
        for name, fn in metrics.items():
            totals[name] += fn(out, yb).item() * len(yb)
    return {name: total / len(x) for name, total in totals.items()}


@torch.no_grad()
def generate(net, prompt_ids, n_chars, gen, temperature=0.8):
    """Sample `n_chars` characters after `prompt_ids` (1-D int64); returns the new ids (n_chars,)."""
    net.eval()
    ids = prompt_ids[None]  # (1, t)
    for _ in range(n_chars):
        logits = net(ids[:, -net.cfg.block_size:])[:, -1] / temperature  # (1, V)
        ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=gen)], dim=1)
    return ids[0, len(prompt_ids):]


def save_checkpoint(net, cfg, path, results):
    """The tool's checkpoint format, plus the configs and results that explain it (plain types only)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "epoch": cfg.steps, "acc": 0.0,
                "model_config": asdict(net.cfg), "train_config": asdict(cfg), "results": results}, path)


# ----------------------------------------------------------------------------- main
def main(argv=None):
    cfg = parse_config(argv)
    torch.set_num_threads(cfg.threads)
    text = charlm.read_text()
    vocab = charlm.build_vocab(text)
    ids = charlm.encode(text, vocab)
    train_ids, _ = charlm.split_ids(ids)
    (train_x, train_y), (test_x, test_y) = charlm.dataset()

    torch.manual_seed(cfg.seed)
    net = charlm.model()
    n_params = sum(p.numel() for p in net.parameters())
    unigram_bits = charlm.unigram_entropy_bits(ids, len(vocab))
    print(f"text {len(text):,} chars, V = {len(vocab)}, unigram entropy {unigram_bits:.3f} bits/char; "
          f"model {n_params:,} parameters; {cfg.steps} steps of {cfg.batch_size} x {net.cfg.block_size} chars "
          f"on {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    train(net, train_ids, cfg)
    train_s = time.perf_counter() - t0

    results = {"train_seconds": round(train_s, 1)}
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        r = evaluate(net, x, y)
        results.update({f"{split}_loss": r["loss"], f"{split}_bits_per_char": r["bits_per_char"]})
        print(f"{split:5s} ({len(x)} windows): {r['loss']:.3f} nats/char = {r['bits_per_char']:.3f} bits/char, "
              f"char accuracy {r['char_accuracy']:.1f}%")
    sample = generate(net, train_ids[:net.cfg.block_size], 120, torch.Generator().manual_seed(cfg.seed))
    print("sample:", repr(charlm.decode(sample, vocab)))
    save_checkpoint(net, cfg, cfg.out, results)
    print(f"trained in {train_s:.1f} s (wall), total {time.perf_counter() - t0:.1f} s; wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
