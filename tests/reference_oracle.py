"""An independent, deliberately plain re-statement of K-prune (KPRUNE_SPEC.md) for BERT, used as a test oracle.

It shares no code with kprune_lib: it runs the Hugging Face model's own forward for every iteration (the
reference's full-pass schedule), attaches masks and captures activations with hooks on the HF modules, finds
the KPMS threshold with the spec's linear walk over the sorted scores, and solves KPWT with `torch.linalg.lstsq`
on the normal equations. Slow and memory-hungry by design; only for tiny models in tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _modules(model, s):
    layer = model.bert.encoder.layer[s // 2]
    if s % 2 == 0:
        return layer.attention.self.query, layer.attention.output.dense  # sublayer input X enters query
    return layer.intermediate.dense, layer.output.dense


def _kl(logits, teacher, T):
    return T * T * F.kl_div(F.log_softmax(logits / T, dim=-1), teacher, reduction="batchmean")


def _outputs(out, problem):
    return (out.start_logits, out.end_logits) if problem == "qa" else out.logits


def _teacher(outputs, problem, T):
    if problem == "qa":
        return tuple(F.softmax(o.detach() / T, dim=-1) for o in outputs)
    if problem == "regression":
        return outputs.squeeze(-1).detach()
    return F.softmax(outputs.detach() / T, dim=-1)


def _loss(outputs, teacher, problem, T):
    if problem == "regression":
        return F.mse_loss(outputs.squeeze(-1), teacher)
    if problem == "qa":  # mean of the start and end terms
        return (_kl(outputs[0], teacher[0], T) + _kl(outputs[1], teacher[1], T)) / 2
    return _kl(outputs, teacher, T)


def _threshold(scores, flops, budget):
    """First score τ (ascending) with Σ_{S>τ} F < budget; +inf if none."""
    for tau in torch.sort(scores).values.tolist():
        if float(flops[scores > tau].sum()) < budget:
            return tau
    return float("inf")


def oracle_kprune(model, batches, problem, *, constraint, seq_len, lam_pred, lam_rep, mu, temperature):
    """Prune `model` (a BERT for sequence classification or, problem "qa", question answering) in place.

    Returns (head_mask, neuron_mask), bool (L, H) and (L, N)."""
    cfg = model.config
    L, H, N, d = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size, cfg.hidden_size
    dh = d // H
    f_head = 8 * seq_len * d * dh + 4 * seq_len**2 * dh
    f_neuron = 4 * seq_len * d
    budget = (1 - constraint) * L * (H * f_head + N * f_neuron)
    width = [H * dh if s % 2 == 0 else N for s in range(2 * L)]
    dim_keep = [torch.ones(width[s], dtype=torch.float64) for s in range(2 * L)]
    teacher_pred, teacher_y = [], {s: [] for s in range(2 * L)}
    n_examples = sum(b["input_ids"].shape[0] for b in batches)
    n_tokens = int(sum(b["attention_mask"].sum() for b in batches))
    model.eval().double().requires_grad_(False)
    unit_keep = {}
    for s in range(2 * L):
        masks = {t: dim_keep[t].clone().requires_grad_(t >= s) for t in range(2 * L)}
        k_pred = {t: torch.zeros(width[t], dtype=torch.float64) for t in range(s, 2 * L)}
        k_rep = {t: torch.zeros(width[t], dtype=torch.float64) for t in range(s, 2 * L)}
        feats_s, x_s = [], []
        for j, b in enumerate(batches):
            tok = b["attention_mask"].bool()
            grabbed, handles = {}, []
            for t in range(2 * L):
                inp, out = _modules(model, t)

                def pre(mod, args, t=t):
                    grabbed[("a", t)] = args[0]
                    return (args[0] * masks[t],)

                def grab_x(mod, args, t=t):
                    grabbed[("x", t)] = args[0]

                def grab_y(mod, args, output, t=t):
                    grabbed[("y", t)] = grabbed[("x", t)] + output

                handles += [out.register_forward_pre_hook(pre), inp.register_forward_pre_hook(grab_x),
                            out.register_forward_hook(grab_y)]
            try:
                logits = _outputs(model(**b), problem)
            finally:
                for h in handles:
                    h.remove()
            if s == 0:
                teacher_pred.append(_teacher(logits, problem, temperature))
                for t in range(2 * L):
                    teacher_y[t].append(grabbed[("y", t)][tok].detach())
            loss = _loss(logits, teacher_pred[j], problem, temperature)
            grads = torch.autograd.grad(loss, [masks[t] for t in range(s, 2 * L)])
            for t, g in zip(range(s, 2 * L), grads):
                a = grabbed[("a", t)].detach()[tok]
                k_pred[t] += 0.5 * g**2
                k_rep[t] += (a**2).sum(0) * _modules(model, t)[1].weight.pow(2).mean(0)
            feats_s.append(grabbed[("a", s)].detach()[tok])
            x_s.append(grabbed[("x", s)].detach()[tok])
        # scores per unit (heads: mean over d_h dims)
        scores = []
        for t in range(s, 2 * L):
            w = dh if t % 2 == 0 else 1
            kp = (k_pred[t] / n_examples).view(-1, w).mean(1)
            kr = (k_rep[t] / n_tokens).view(-1, w).mean(1)
            f = f_head if t % 2 == 0 else f_neuron
            sc = (mu if t % 2 == 0 else 1.0) * (lam_rep * kr + lam_pred * kp) / f
            scores.append((t, sc, f))
        # candidates: neurons of layers >= s//2; heads of layers >= s//2 (FFN target: > s//2)
        cand = [(t, sc, f) for t, sc, f in scores if not (t % 2 == 0 and s % 2 == 1 and t // 2 == s // 2)]
        all_s = torch.cat([sc for _, sc, _ in cand])
        all_f = torch.cat([torch.full_like(sc, f) for _, sc, f in cand])
        tau = _threshold(all_s, all_f, budget)
        keep = scores[0][1] > tau
        unit_keep[s] = keep
        budget -= int(keep.sum()) * (f_head if s % 2 == 0 else f_neuron)
        # KPWT: least squares on the normal equations
        dims = keep.repeat_interleave(dh) if s % 2 == 0 else keep
        proj = _modules(model, s)[1]
        A = torch.cat(feats_s)[:, dims]
        target = torch.cat(teacher_y[s]) - torch.cat(x_s) - proj.bias
        W = torch.zeros_like(proj.weight)
        if A.shape[1]:
            W[:, dims] = torch.linalg.lstsq(A.T @ A, A.T @ target).solution.T
        proj.weight.copy_(W)
        if not bool(dims.any()):  # no unit left: the sublayer adds nothing, LayerNorm(X) (its bias goes too)
            proj.bias.zero_()
        dim_keep[s] = dims.double()
    head_mask = torch.stack([unit_keep[2 * i] for i in range(L)])
    neuron_mask = torch.stack([unit_keep[2 * i + 1] for i in range(L)])
    return head_mask, neuron_mask
