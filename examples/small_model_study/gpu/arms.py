"""Train one arm of the method study on a GPU machine: a plain PyTorch loop over rows pre-tokenized here with
``training.data.tokenize_messages`` (our masks, the student's tokenizer), the same initial student for every arm
and seed, AdamW with warm-up and cosine decay; saves the model in bf16. argv: arm seed steps batch lr.

Used because the GPU image lacks TRL and the package's other dependencies (docs/method_study.md says so).
"""
import json
import math
import os
import random
import sys
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

arm, seed, steps, bs, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
OUT = os.environ["OUT"]; dev = "cuda"
tok = AutoTokenizer.from_pretrained(".gpu/student")
cfg = LlamaConfig.from_pretrained(".gpu/student")
torch.manual_seed(0)  # the same initial student for every arm and seed
model = LlamaForCausalLM(cfg).to(dev)
random.seed(seed); torch.manual_seed(seed)
rows = json.load(open(".gpu/train_tokens.json"))[arm]
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
warm = 30
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
t0 = time.time(); order = []; seen = trained = 0; done = 0
for step in range(1, steps + 1):
    if len(order) < bs:
        order += random.sample(range(len(rows)), len(rows))
    batch = [rows[order.pop()] for _ in range(bs)]
    w = max(len(r[0]) for r in batch)
    x = torch.tensor([r[0] + [tok.pad_token_id] * (w - len(r[0])) for r in batch], device=dev)
    y = torch.tensor([r[1] + [-100] * (w - len(r[1])) for r in batch], device=dev)
    att = torch.tensor([[1] * len(r[0]) + [0] * (w - len(r[0])) for r in batch], device=dev)
    with torch.autocast(dev, dtype=torch.bfloat16):
        loss = model(input_ids=x, attention_mask=att, labels=y).loss
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    seen += sum(len(r[0]) for r in batch); trained += sum(sum(l != -100 for l in r[1]) for r in batch); done = step
    if step % 100 == 0:
        print(f"[{arm} s{seed}] step {step} loss {loss.item():.3f} {time.time()-t0:.0f}s", flush=True)
    if time.time() - t0 > float(os.environ.get("MAXSEC", "1e9")):
        print(f"[{arm} s{seed}] STOPPED at the time limit at step {step}", flush=True); break
model.to(torch.bfloat16).save_pretrained(f"{OUT}/{arm}-s{seed}", safe_serialization=True)
json.dump({"arm": arm, "seed": seed, "steps": done, "batch": bs, "lr": lr, "tokens": seen, "trainable_tokens": trained,
           "seconds": time.time() - t0, "final_loss": float(loss.item()), "device": torch.cuda.get_device_name()},
          open(f"{OUT}/{arm}-s{seed}/run.json", "w"))
print(f"[{arm} s{seed}] done {done} steps {time.time()-t0:.0f}s loss {loss.item():.3f}", flush=True)
