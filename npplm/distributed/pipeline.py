"""Pipeline parallelism, GPipe's schedule: a causal LM's blocks split into N stages on N
ranks, each batch streamed through them as M micro-batches.

Paper: Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline
Parallelism", NeurIPS 2019, arXiv:1811.06965 (its figure 2 draws this schedule). The tied head's
gradient is summed between the first and last stage as Megatron-LM does (Narayanan et al.,
"Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", SC 2021,
arXiv:2104.04473, which keeps a copy of the word embeddings on both stages).

    pipe = GPipe(model, current_world(), micro_batches=4)   # stage = this rank's share
    optimizer = AdamW(decay_groups(pipe.stage, 0.1), lr=1e-3)
    loss = pipe.step(batch)          # forwards and backwards of the M micro-batches
    pipe.clip_grad_norm(1.0)         # the global norm, summed over the stages
    optimizer.step(); optimizer.zero_grad()
    pipe.gather()                    # rank 0's model holds every stage's weights (to save)

The cut (`cut_model`, `split_layers`). Stage 0 holds the embeddings and its blocks, the
middle stages only blocks, the last stage its blocks, the final norm, the LM head and the
loss. The L blocks are split as evenly as possible: contiguous runs whose lengths differ by
at most one, the longer runs first. Each rank keeps the whole model object (built from the
same seed, then broadcast from rank 0 so every copy agrees) but computes with and updates
only its stage's parameters, `stage.parameters()`: the others sit unused, stale after the
first update. That is the simplest honest version; it costs every rank the memory of the
whole model's weights (not of its gradients or optimizer moments, which exist only for the
stage), and it lets one checkpoint format serve every layout: `gather()` brings every
stage's weights to rank 0, whose model is then saved as usual. A model too large for one
process would be built stage by stage instead; nothing below depends on which.

The schedule, on every rank (stage s of N, micro-batches 1..M, rows B/M each):

    forward, k = 1..M:   x_k = embed(ids_k)                     on stage 0
                         x_k = Recv (B/M, T, C) from s - 1       otherwise, a leaf Tensor
                         h_k = blocks_s(x_k)                     the graph is kept
                         Isend h_k to s + 1                      unless s = N - 1, where
                         loss_k = CE(head(h_k), labels_k)        the last stage scores it
    backward, k = M..1:  (w_k loss_k).backward()                 on stage N - 1
                         g = Recv dL/dh_k from s + 1; h_k.backward(g)    otherwise
                         Isend x_k.grad = dL/dx_k to s - 1      unless s = 0

so the timeline of N = 3 stages and M = 4 micro-batches, a slot per forward or backward
(a backward really takes about twice a forward; the shape stays the same):

    slot       1   2   3   4   5   6   7   8   9  10  11  12
    stage 0   F1  F2  F3  F4   .   .   .   .  B4  B3  B2  B1
    stage 1    .  F1  F2  F3  F4   .   .  B4  B3  B2  B1   .
    stage 2    .   .  F1  F2  F3  F4  B4  B3  B2  B1   .   .

Every stage works 2M of the 2(M + N - 1) slots and idles in the other 2(N - 1), the
"bubble": its fraction of the step is

    bubble = (N - 1) / (M + N - 1)          (GPipe's "O((K - 1)/(M + K - 1))", K stages)

4/12 = 1/3 above; more micro-batches shrink it (the paper finds it negligible for
M >= 4N), at the price of smaller, less efficient matrix products. `GPipe.bubble` is the
formula; `wait_s / step_s` of a step is the fraction measured (time blocked in Recv).

Memory. Between its forward and its backward every micro-batch's graph is kept, so a stage
holds the activations of all M micro-batches of its blocks at the peak: the activations of
the whole batch B through L/N layers, the same as one process holding the batch for those
layers. GPipe re-computes each micro-batch's forward during backward to keep only the
stage's inputs (re-materialisation); this file does not.

What is exact. Micro-batch k's loss is the mean over its n_k scored targets (labels != -100
of labels[:, 1:], as causal_lm_loss shifts them), weighted by w_k = n_k / (n_1 + ... + n_M)
(`data_parallel.shard_weights`, the rule of trainer.accumulation_weights), so the sum of the
weighted micro-batch gradients is the full batch's gradient, and the loss returned is the
full batch's loss. Only float rounding differs from one process (sums over rows split into
M parts). Dropout is exact too: every Dropout layer draws from its own generator, seeded
from the model's seed, in row-major order, and only its own stage calls it, on contiguous
micro-batches in order, so it draws one process's full-batch masks (build the model from
the same seed on every rank). The tied table's two copies get the same summed gradient and
the same update, so they stay equal bit for bit. Measured (tests/distributed/
test_pipeline.py, 10 AdamW steps of a tiny GPT-2 on 2 stages against the Trainer in one
process): losses within 6e-7, parameters within 2e-7, except attention's key bias, whose
true gradient is zero (softmax ignores a shift shared by every key): AdamW divides its
rounding noise by eps and moves it by up to 2.4e-6.

Messages are NumPy buffers (world.py: Send/Recv/Isend, never pickle), float32 activations
and gradients of shape (B/M, T, C); every rank holds the whole batch, so every receiver
knows each message's shape. Tags: 4 k + kind, kind 0 activations, 1 their gradients, 2 the
tied weights' gradients, 3 gather(); distinct per micro-batch and direction.
"""

import time

import numpy as np

from autograd import Tensor, array_module, as_array, to_numpy
from npplm.distributed.data_parallel import shard_batch, shard_rows, shard_weights
from npplm.layers import causal_lm_loss
from npplm.models.gpt import GPT2LMHeadModel, OpenAIGPTLMHeadModel
from npplm.models.llama import LlamaForCausalLM

ACTIVATION, GRADIENT, TIED, GATHER = 0, 1, 2, 3  # the kinds of message (tag = 4 index + kind)
BATCH_KEYS = ("input_ids", "labels", "attention_mask")  # what a pipelined batch may hold


def tag(kind, index):
    """The MPI tag of message `kind` for micro-batch (or parameter) `index`."""
    return 4 * index + kind


# --- the cut: a causal LM as embed | blocks | head ----------------------------------------


class GPTCut:
    """GPT-1/2/3 (gpt.py) in pieces: the tables, the blocks, ln_f + the tied head + the loss.

    Each piece calls the model's own modules; `layer_inputs` assembles what every block
    takes besides h, with the model's own helpers.
    """

    def __init__(self, model):
        self.model, self.config = model, model.config
        backbone = model.transformer
        self.wte, self.wpe, self.blocks, self.ln_f = backbone._parts()
        self.first = [self.wte, self.wpe, backbone.drop]  # stage 0's modules besides blocks
        self.last = [m for m in (self.ln_f, model.lm_head) if m is not None]  # stage N - 1's
        self.table = self.wte.weight  # (V, C): its dtype and device are the activations'

    def layer_inputs(self, rows):
        """(ids (b, T), positions (b or 1, T), {layer kind: mask}) for rows of a batch."""
        return self.model.transformer.layer_inputs(rows["input_ids"],
                                                   rows.get("attention_mask"))

    def embed(self, inputs):
        ids, positions, _ = inputs
        h = self.wte(ids) + self.wpe(positions)  # (b, T, C) + (b or 1, T, C) -> (b, T, C)
        return self.model.transformer.drop(h)

    def block(self, i, h, inputs):
        kind = self.config.layer_kinds()[i]
        return self.blocks[i](h, inputs[2][kind], None, i)  # (b, T, C) -> (b, T, C)

    def loss(self, h, labels):
        if self.ln_f is not None:
            h = self.ln_f(h)
        return causal_lm_loss(self.model.lm_head(h), labels)  # (b, T, C) @ (C, V) -> CE


class LlamaCut:
    """LLaMA (llama.py) in pieces: embed_tokens, the decoder layers, norm + lm_head + loss."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        backbone = model.model
        self.embed_tokens, self.blocks = backbone.embed_tokens, backbone.layers
        self.first = [self.embed_tokens]
        self.last = [backbone.norm, model.lm_head]  # lm_head may be the table (tied)
        self.table = self.embed_tokens.weight  # (V, C)

    def layer_inputs(self, rows):
        """(ids (b, T), cos, sin (b or 1, T, D), CausalMask) for rows of a batch."""
        return self.model.model.layer_inputs(rows["input_ids"], rows.get("attention_mask"))

    def embed(self, inputs):
        return self.embed_tokens(inputs[0])  # (b, T) -> (b, T, C)

    def block(self, i, h, inputs):
        _, cos, sin, bias = inputs
        return self.blocks[i](h, cos, sin, bias, None, i)  # (b, T, C) -> (b, T, C)

    def loss(self, h, labels):
        h = self.model.model.norm(h)
        return causal_lm_loss(self.model.lm_head(h), labels)  # (b, T, V) -> CE


def cut_model(model):
    """The pieces of a causal LM the pipeline runs (GPTCut or LlamaCut)."""
    if isinstance(model, (GPT2LMHeadModel, OpenAIGPTLMHeadModel)):
        return GPTCut(model)
    if isinstance(model, LlamaForCausalLM):
        return LlamaCut(model)
    raise TypeError(f"the pipeline cuts GPT2LMHeadModel, OpenAIGPTLMHeadModel and "
                    f"LlamaForCausalLM; got {type(model).__name__}")


def split_layers(n_layers, n_stages):
    """The blocks of each stage: contiguous ranges whose lengths differ by at most one."""
    if n_layers < n_stages:
        raise ValueError(f"{n_layers} blocks cannot fill {n_stages} pipeline stages: run "
                         f"at most {n_layers} ranks")
    return [range(*shard_rows(n_layers, s, n_stages)) for s in range(n_stages)]


class Stage:
    """Stage `index` of `count`: its blocks (`layers`) and the modules around them.

    parameters() lists every parameter the stage computes with, each once, in the model's
    order; a tied table appears in the first and the last stage both. It is what the
    optimizer takes (decay_groups(stage, wd) works, as on a model).
    """

    def __init__(self, cut, index, count, layers):
        self.index, self.count, self.layers = index, count, layers
        self.is_first, self.is_last = index == 0, index == count - 1
        modules = ((cut.first if self.is_first else []) + [cut.blocks[i] for i in layers]
                   + (cut.last if self.is_last else []))
        mine = {id(p) for m in modules for p in m.parameters()}
        self._named = [(name, p) for name, p in cut.model.named_parameters() if id(p) in mine]

    def named_parameters(self):
        return list(self._named)

    def parameters(self):
        return [p for _, p in self._named]

    def __repr__(self):
        return (f"Stage({self.index} of {self.count}, blocks {self.layers.start}.."
                f"{self.layers.stop - 1}, {sum(p.size for p in self.parameters()):,} "
                "parameters)")


# --- the schedule -----------------------------------------------------------------------------


class GPipe:
    """GPipe training of a causal LM over the ranks of `world`, one stage a rank.

    model          GPT2LMHeadModel, OpenAIGPTLMHeadModel or LlamaForCausalLM, whole on
                   every rank (see the module docstring)
    world          world.Mpi (N = its size stages) or SingleProcess (one stage: the model)
    micro_batches  M: each batch is split into M micro-batches of about B / M rows

    step(batch) runs one batch's forwards and backwards and leaves the full batch's
    gradient in the stage's parameters; clip_grad_norm(max_norm) clips by the global norm;
    the optimizer (over stage.parameters()) then steps as usual.
    """

    def __init__(self, model, world, micro_batches):
        if not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"micro_batches={micro_batches!r} must be a positive integer")
        self.model, self.world, self.M = model, world, micro_batches
        self.cut = cut_model(model)
        N = world.size
        self.stages = [Stage(self.cut, s, N, layers)
                       for s, layers in enumerate(split_layers(len(self.cut.blocks), N))]
        self.stage = self.stages[world.rank]
        # A parameter held by several stages (GPT-2's wte, which the last stage's lm_head
        # reads too) is "tied": its home is the first stage that holds it.
        holders = {}
        for stage in self.stages:
            for p in stage.parameters():
                holders.setdefault(id(p), []).append(stage.index)
        self.home = {key: stages[0] for key, stages in holders.items()}
        self.tied = [(i, p, holders[id(p)]) for i, p in enumerate(model.parameters())
                     if len(holders.get(id(p), ())) > 1]
        self.wait_s = self.step_s = 0.0  # of the last step: blocked in Recv / in all
        if N > 1:
            for p in model.parameters():  # every copy starts from rank 0's weights
                world.broadcast(p.data)

    @property
    def bubble(self):
        """The idle fraction of GPipe's schedule: (N - 1) / (M + N - 1)."""
        return bubble(self.world.size, self.M)

    # --- messages: NumPy buffers (a CuPy array goes through the host) -------------------
    def _receive(self, shape, source, message_tag):
        """A (shape) array of the model's dtype, on its device, from rank `source`; the
        time blocked here counts as waiting (the bubble, measured)."""
        buffer = np.empty(shape, self.cut.table.dtype)
        started = time.perf_counter()
        self.world.recv(buffer, source, message_tag)
        self.wait_s += time.perf_counter() - started
        return array_module(self.cut.table.data).asarray(buffer)

    def _isend(self, array, dest, message_tag, pending):
        buffer = np.ascontiguousarray(to_numpy(array))
        pending.append((self.world.isend(buffer, dest, message_tag), buffer))  # kept alive

    # --- one batch ------------------------------------------------------------------------
    def step(self, batch):
        """The M micro-batches of `batch` forward through every stage, then backward in
        reverse; returns the full batch's loss (the same float on every rank).

        batch: {"input_ids": (B, T), "labels": (B, T), optional "attention_mask": (B, T)},
        the whole batch on every rank. Gradients are added into the stage's parameters'
        .grad (zero them between steps, as with one process); the tied table's copies end
        with the same summed gradient.
        """
        unknown = sorted(set(batch) - set(BATCH_KEYS))
        if unknown or "labels" not in batch:
            raise ValueError(f"a pipelined batch holds {BATCH_KEYS} (labels required); got "
                             f"{sorted(batch)}")
        B, T = np.shape(batch["input_ids"])
        if B < self.M:
            raise ValueError(f"a batch of {B} rows cannot make {self.M} micro-batches")
        world, stage, cut = self.world, self.stage, self.cut
        s, N = stage.index, stage.count
        started = time.perf_counter()
        self.wait_s = 0.0
        self.model.train()
        micro = [shard_batch(batch, k, self.M) for k in range(self.M)]
        weights = shard_weights([batch], micro, scored_targets, sequence_terms=False)
        pending, kept, total = [], [], 0.0
        for k, rows in enumerate(micro):  # forward: F1 .. FM
            inputs = cut.layer_inputs(rows)
            shape = (len(rows["input_ids"]), T, cut.table.shape[1])  # (b, T, C)
            if stage.is_first:
                x = None
                h = cut.embed(inputs)
            else:
                x = Tensor(self._receive(shape, s - 1, tag(ACTIVATION, k)), requires_grad=True)
                h = x
            for i in stage.layers:
                h = cut.block(i, h, inputs)  # (b, T, C)
            if stage.is_last:
                h = cut.loss(h, rows["labels"])  # the micro-batch's mean loss, a scalar
                total += float(h.item()) * weights[k]
            else:
                self._isend(h.data, s + 1, tag(ACTIVATION, k), pending)
            kept.append((x, h))
        for k in reversed(range(self.M)):  # backward: BM .. B1
            x, h = kept[k]
            kept[k] = None  # this micro-batch's graph is freed once its backward is done
            if stage.is_last:
                (h * weights[k]).backward()
            else:
                h.backward(self._receive(h.shape, s + 1, tag(GRADIENT, k)))
            if not stage.is_first:
                grad = x.grad if x.grad is not None else array_module(x.data).zeros_like(x.data)
                self._isend(grad, s - 1, tag(GRADIENT, k), pending)
        waited = time.perf_counter()
        world.wait([request for request, _ in pending], "the pipeline's messages")
        self.wait_s += time.perf_counter() - waited
        self._sum_tied_gradients()
        loss = np.array([total], np.float64)
        world.broadcast(loss, root=N - 1)  # the last stage computed it
        self.step_s = time.perf_counter() - started
        return float(loss[0])

    def _sum_tied_gradients(self):
        """Each tied parameter's gradient <- the sum over the stages that hold it: the
        holders send theirs to its home stage, which adds them in stage order and sends the
        sum back, so every copy gets the same bits and takes the same update."""
        s = self.stage.index
        for i, p, holders in self.tied:
            if s not in holders:
                continue
            xp = array_module(p.data)
            mine = p.grad if p.grad is not None else xp.zeros_like(p.data)
            home, others = holders[0], holders[1:]
            if s == home:
                for other in others:
                    mine = mine + self._receive(p.shape, other, tag(TIED, i))
                for other in others:
                    self.world.send(np.ascontiguousarray(to_numpy(mine)), other, tag(TIED, i))
                p.grad = mine
            else:
                self.world.send(np.ascontiguousarray(to_numpy(mine)), home, tag(TIED, i))
                p.grad = self._receive(p.shape, home, tag(TIED, i))

    # --- after the step ---------------------------------------------------------------------
    def clip_grad_norm(self, max_norm):
        """Scale the stage's gradients by min(1, max_norm / (||g|| + 1e-6)), as
        optim.clip_grad_norm scales one process's; return ||g|| before.

        ||g||^2 = sum over stages of the squares of the gradients each stage is home to (a
        tied table counted once), in float64, summed over ranks (world.sum): every rank
        gets the same norm and the same scale."""
        s = self.stage.index
        local = sum(float((to_numpy(p.grad).astype(np.float64) ** 2).sum())
                    for p in self.stage.parameters()
                    if p.grad is not None and self.home[id(p)] == s)
        total = float(np.sqrt(self.world.sum(local)))
        if max_norm is not None and np.isfinite(total):
            scale = max_norm / (total + 1e-6)
            if scale < 1.0:
                for p in self.stage.parameters():
                    if p.grad is not None:
                        p.grad *= scale
        return total

    def gather(self, root=0):
        """Every stage's current parameters into `root`'s model (in place): then that
        model is the trained one, to save or evaluate. Every rank must call it."""
        rank = self.world.rank
        for i, p in enumerate(self.model.parameters()):
            home = self.home.get(id(p), root)
            if home == root:
                continue
            if rank == home:
                self.world.send(np.ascontiguousarray(to_numpy(p.data)), root, tag(GATHER, i))
            elif rank == root:
                p.data[...] = self._receive(p.shape, home, tag(GATHER, i))


def bubble(n_stages, micro_batches):
    """GPipe's idle fraction (N - 1) / (M + N - 1): a pass (forward or backward) takes
    M + N - 1 slots, and stage s works M of them, idle s slots before its first micro-batch
    arrives and N - 1 - s after its last has left (the module docstring's timeline)."""
    return (n_stages - 1) / (micro_batches + n_stages - 1)


def scored_targets(rows):
    """How many targets causal_lm_loss averages over: labels != -100 of labels[:, 1:] (it
    scores position t against labels[t + 1]), as trainer.scored_tokens counts them."""
    return int((to_numpy(as_array(rows["labels"]))[:, 1:] != -100).sum())
