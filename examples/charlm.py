"""A small character-level transformer language model on Jane Austen, for loss landscapes.

The tool names these functions as `file.py:function` specs:
    --model examples/charlm.py:model        a fresh, untrained CharTransformer
    --dataset examples/charlm.py:dataset    (train, test), each (inputs, targets) int64 (N, 64)
    --loss_name examples/charlm.py:loss     mean cross-entropy per character, in nats
    --metrics examples/charlm.py:metrics    {"bits_per_char", "char_accuracy"}
examples/train_charlm.py trains it. Nothing runs on import: the text is read on the first call.

Model: a 2-layer pre-LN causal transformer, d_model 64, 4 heads of 16, context 64, learned
position embeddings, GELU MLP (4x), untied input and output embeddings (so every parameter has
exactly one name, and a direction moves each weight once), 113,664 parameters with V = 74.
Data: examples/data/pride_and_prejudice_ch1-18.txt, 180,876 characters, 74 distinct (V = 74,
the sorted set of characters). The first 90% of the characters train, the last 10% test.
dataset() returns 256 training and 64 test windows of T = 64 characters, evenly spaced with a
fixed stride (638 and 286 characters), so no two windows of a split overlap.
"""
import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

TEXT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pride_and_prejudice_ch1-18.txt")
TRAIN_FRACTION = 0.9   # first 90% of the characters train, the last 10% test
N_TRAIN_WINDOWS = 256  # windows dataset() returns: one full evaluation is 20,480 characters,
N_TEST_WINDOWS = 64    # a fraction of a second on 2 CPU cores


@dataclass(frozen=True)
class CharLMConfig:
    vocab_size: int
    block_size: int = 64  # context length T, characters
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64      # d_model C; head size C / n_head = 16


# ----------------------------------------------------------------------------- text and windows
@functools.lru_cache(maxsize=None)
def read_text(path=TEXT_PATH):
    """The whole text file as one string (cached: every factory below needs it)."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def build_vocab(text):
    """The sorted distinct characters of `text`; a character's index is its token id."""
    return sorted(set(text))


def encode(text, vocab):
    """String -> int64 tensor (len(text),) of token ids."""
    stoi = {ch: i for i, ch in enumerate(vocab)}
    return torch.tensor([stoi[ch] for ch in text], dtype=torch.int64)


def decode(ids, vocab):
    """Token ids (any int sequence or 1-D tensor) -> string."""
    return "".join(vocab[int(i)] for i in ids)


def split_ids(ids, train_fraction=TRAIN_FRACTION):
    """(train, test): the first `train_fraction` of the ids and the rest, in text order."""
    n = int(len(ids) * train_fraction)
    return ids[:n], ids[n:]


def make_windows(ids, n_windows, block_size):
    """`n_windows` evenly spaced windows of `ids`: inputs (n, T) and targets (n, T), shifted by one."""
    span = len(ids) - (block_size + 1)  # last possible start
    assert n_windows >= 1 and span >= 0, f"{len(ids)} ids cannot hold {n_windows} windows of {block_size}"
    stride = span // max(n_windows - 1, 1)
    assert n_windows == 1 or stride >= block_size + 1, f"stride {stride} would overlap windows"
    starts = torch.arange(n_windows) * stride                        # (n,)
    windows = ids[starts[:, None] + torch.arange(block_size + 1)]    # (n, T+1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def unigram_entropy_bits(ids, vocab_size):
    """Entropy of the character frequencies of `ids`, in bits per character: the unigram baseline."""
    p = torch.bincount(ids, minlength=vocab_size).double() / len(ids)
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


# ----------------------------------------------------------------------------- model
class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, f"n_embd {cfg.n_embd} not divisible by n_head {cfg.n_head}"
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)                            # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        # written out rather than F.scaled_dot_product_attention, which torch.func.vmap (the tool's
        # --points_per_pass) only runs through a slow per-point fallback
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])        # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(future, float("-inf")).softmax(dim=-1)    # causal: row t sees 0..t
        y = att @ v                                                      # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))            # (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """int64 tokens (B, T) -> logits (B, T, V), each position seeing only itself and earlier ones."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)  # untied from tok_emb
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        B, T = idx.shape
        assert T <= self.cfg.block_size, f"sequence length {T} exceeds the context {self.cfg.block_size}"
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, V)


# ----------------------------------------------------------------------------- the tool's entry points
def config():
    """The model's config, with V read from the text (the sorted set of its characters)."""
    return CharLMConfig(vocab_size=len(build_vocab(read_text())))


def model():
    """A fresh CharTransformer; its weights depend only on torch's global seed."""
    return CharTransformer(config())


def dataset(n_train=N_TRAIN_WINDOWS, n_test=N_TEST_WINDOWS, block_size=CharLMConfig.block_size):
    """((train_x, train_y), (test_x, test_y)): int64 (n, T) windows, targets shifted by one."""
    text = read_text()
    train_ids, test_ids = split_ids(encode(text, build_vocab(text)))
    return make_windows(train_ids, n_train, block_size), make_windows(test_ids, n_test, block_size)


def char_cross_entropy(outputs, targets):
    """Mean cross-entropy per character, in nats: outputs (..., V) logits, targets (...) ids."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), targets.reshape(-1))


def bits_per_char(outputs, targets):
    """Mean cross-entropy per character, in bits."""
    return char_cross_entropy(outputs, targets) / math.log(2)


def char_accuracy(outputs, targets):
    """Percentage of characters whose most likely prediction is the target (like the tool's accuracy)."""
    return 100.0 * (outputs.argmax(dim=-1) == targets).float().mean()


def loss():
    """The training criterion: (outputs (B, T, V), targets (B, T)) -> scalar mean nats per character."""
    return char_cross_entropy


def metrics():
    """Extra per-character means to record at each grid point."""
    return {"bits_per_char": bits_per_char, "char_accuracy": char_accuracy}
