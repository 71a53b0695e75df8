"""GPU exploration (issue 16; run on an H200 with `.gpu/` carried, see docs/method_study.md): how many steps / what size does a from-scratch student need to act right on held-out worlds?
Plain PyTorch loop on pre-tokenized rows (our masks); proxy = teacher-forced next-action accuracy on held-out
clean rows (greedy), by turn index and split."""
import json
import math
import os
import random
import re
import sys
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

name, data_name, hidden, layers, heads, inter, lr, steps, bs, pre_steps = sys.argv[1:11]
pre_steps = int(pre_steps)
hidden, layers, heads, inter, steps, bs, lr = int(hidden), int(layers), int(heads), int(inter), int(steps), int(bs), float(lr)
OUT = os.environ.get("OUT", "/tmp")
log = open(f"{OUT}/{name}.log", "w")
def say(*a):
    s = " ".join(str(x) for x in a); print(f"[{name}] {s}", flush=True); log.write(s + "\n"); log.flush()

dev = os.environ.get("DEV", "cuda")
torch.manual_seed(0); random.seed(0)
tok = AutoTokenizer.from_pretrained(".gpu/student")
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
                  rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
model = LlamaForCausalLM(cfg).to(dev)
say("params", sum(p.numel() for p in model.parameters()))
ALL = json.load(open(".gpu/train_tokens.json"))  # noqa: SIM115 - a one-shot script
rows = ALL[data_name]
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
warm = 50
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))

held = [json.loads(l) for l in open(".gpu/held_clean.jsonl")]
jobs = []
for r in held:
    k = 0
    for i, m in enumerate(r["messages"]):
        if m["role"] == "assistant":
            gold = re.search(r"Action:\s*(.*)", m["content"]).group(1).strip().lower()
            ids = tok.apply_chat_template([{"role": x["role"], "content": x["content"]} for x in r["messages"][:i]],
                                          add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            jobs.append((r.get("source"), k, list(ids), gold)); k += 1

jobs = jobs[: int(os.environ.get("NJOBS", "100000"))]

def proxy(step):
    model.eval(); res = {}; pad = tok.pad_token_id
    for b in range(0, len(jobs), 64):
        chunk = jobs[b:b + 64]; w = max(len(j[2]) for j in chunk)
        x = torch.tensor([[pad] * (w - len(j[2])) + j[2] for j in chunk], device=dev)
        a = torch.tensor([[0] * (w - len(j[2])) + [1] * len(j[2]) for j in chunk], device=dev)
        with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16):
            out = model.generate(input_ids=x, attention_mask=a, do_sample=False, max_new_tokens=120, pad_token_id=pad)
        for j, o in zip(chunk, out[:, w:]):
            m = re.search(r"Action:\s*(.*)", tok.decode(o, skip_special_tokens=True))
            res.setdefault((j[0], min(j[1], 2)), []).append((m.group(1).strip().lower() if m else "") == j[3])
    model.train()
    summary = " ".join(f"{s}/{k}={sum(v)/len(v):.2f}" for (s, k), v in sorted(res.items()))
    allh = [x for (s, k), v in res.items() if s == "heldout" for x in v]
    say(f"step {step} proxy heldout_all={sum(allh)/len(allh):.2f} | {summary}")

checks = {30, 60, 125, 250, 500, 1000, 2000, steps}
def run_steps(data, n, optimizer, scheduler, check):
    order = []
    for step in range(1, n + 1):
        if len(order) < bs:
            order += random.sample(range(len(data)), len(data))
        batch = [data[order.pop()] for _ in range(bs)]
        w = max(len(r[0]) for r in batch)
        x = torch.tensor([r[0] + [tok.pad_token_id] * (w - len(r[0])) for r in batch], device=dev)
        y = torch.tensor([r[1] + [-100] * (w - len(r[1])) for r in batch], device=dev)
        att = torch.tensor([[1] * len(r[0]) + [0] * (w - len(r[0])) for r in batch], device=dev)
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = model(input_ids=x, attention_mask=att, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step(); scheduler.step(); optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            say(f"{'pre' if not check else ''}step {step} loss {loss.item():.3f} {time.time()-t0:.0f}s")
        if check and step in checks:
            proxy(step)
        if time.time() - t0 > float(os.environ.get("MAXSEC", "1e9")):
            proxy(step); say("stopped at the time limit"); return

t0 = time.time(); model.train()
if pre_steps:
    popt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    psched = torch.optim.lr_scheduler.LambdaLR(popt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, pre_steps) / pre_steps)))
    run_steps(ALL["pre"], pre_steps, popt, psched, False)
    proxy(0)
run_steps(rows, steps, opt, sched, True)
say("done", f"{time.time()-t0:.0f}s")
