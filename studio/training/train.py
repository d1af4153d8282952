"""Run a training recipe: `python -m studio train job_dir/recipe.yaml [--resume]`.

The UI starts this command as its own process; it works the same from a terminal. It writes, in the recipe's
output_dir (the job folder when the UI made the recipe):
metrics.jsonl (one JSON line per logging step), checkpoints (checkpoint-N), the LoRA adapter with its tokenizer
(adapter/), and result.json ({"status": finished | stopped | failed, ...}). SIGTERM stops at the end of the current
step and saves a checkpoint, which --resume continues from. Under `accelerate launch` (the recipe's `processes`),
every process trains on its share of each batch; the first one writes metrics, the adapter and result.json, and all
of them stop at the same step.
"""

import argparse
import json
import os
import random
import resource
import signal
import sys
import threading
import time
import traceback
import types
import uuid
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
import trl
from accelerate import PartialState
from datasets import load_dataset
from peft import LoraConfig, PeftModel, prepare_model_for_kbit_training
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    DynamicCache,
    TrainerCallback,
)
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.trainer_utils import get_last_checkpoint
from trl.trainer import dpo_trainer
from trl.trainer.utils import FusedCausalLMOutput

from studio.core import methods
from studio.inference import models
from studio.inference.decode import adapter_folded_in, decode_tokens, next_tokens
from studio.training import recipes, rewards

STOP = threading.Event()
ADAPTER = "adapter"


def _metrics_callback(path: Path):
    class MetricsCallback(TrainerCallback):
        """One JSON line per log step (loss, DPO rewards, learning rate, tokens/s, ETA); stops on SIGTERM."""

        def __init__(self):
            self.started = self.first_step = None
            self.last = None  # (time, tokens seen) at the previous log

        def on_train_begin(self, args, state, control, **kwargs):
            self.started, self.first_step = time.time(), state.global_step
            self.last = (self.started, 0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero:  # several processes: the first one writes the metrics
                return
            now = time.time()
            row = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch, "time": now}
            row.update({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))})
            tokens = (logs or {}).get("num_tokens") or state.num_input_tokens_seen
            if tokens and self.last and now > self.last[0]:
                row["tokens_per_s"] = (tokens - self.last[1]) / (now - self.last[0])
            self.last = (now, tokens)
            done = state.global_step - self.first_step
            if done > 0:
                row["eta_s"] = (state.max_steps - state.global_step) * (now - self.started) / done
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")

        def on_step_begin(self, args, state, control, **kwargs):
            rewards.step_began = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if args.world_size > 1:  # several processes stop at the same step, or the others wait for it forever
                flag = torch.tensor([1.0 if STOP.is_set() else 0.0], device=args.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                if flag.item() > 0:
                    STOP.set()
            if STOP.is_set():
                control.should_save = True
                control.should_training_stop = True

    return MetricsCallback()


def _load_data(recipe, method: str):
    """The training data set; SFT turns preference rows into conversations ending in the chosen answer."""

    source = recipe.data
    path = Path(source).expanduser()
    try:
        if path.is_file():
            kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix.lower())
            if kind is None:
                raise recipes.RecipeError(f"data: {source} is not a .jsonl, .json, .parquet or .csv file.")
            dataset = load_dataset(kind, data_files=str(path), split="train")
        else:
            dataset = load_dataset(source, split=recipe.data_split)
    except recipes.RecipeError:
        raise
    except Exception as error:  # datasets' many error types: the user needs the reason
        raise recipes.RecipeError(f"data: could not load {source!r}: {error}") from None
    columns = set(dataset.column_names)
    needed = methods.get(method).columns
    if not set(needed) <= columns:
        raise recipes.RecipeError(
            f"data: {method} needs {' and '.join(needed)} column{'s' * (len(needed) > 1)}; "
            f"{source} has {', '.join(sorted(columns))}."
        )
    if method == "sft" and {"prompt", "chosen"} <= columns and "messages" not in columns:
        dataset = dataset.map(
            lambda row: {"messages": row["prompt"] + row["chosen"]}, remove_columns=dataset.column_names
        )
        # A chosen answer in several pairs (a demonstration over each failing candidate, a best answer in all
        # pairs) is one conversation to learn, once.
        seen, keep = set(), []
        for index, row in enumerate(dataset):
            key = json.dumps(row["messages"], sort_keys=True, ensure_ascii=False)
            if key not in seen:
                seen.add(key)
                keep.append(index)
        if len(keep) < len(dataset):
            print(
                f"SFT: {len(keep)} conversations to learn ({len(dataset)} rows; an answer chosen in several pairs "
                "counts once)",
                flush=True,
            )
            dataset = dataset.select(keep)
    if len(dataset) == 0:
        raise recipes.RecipeError(f"data: {source} has no rows.")
    return dataset


def group_by_length(dataset, batch_size: int, seed: int, block: int = 16):
    """Rows reordered so each batch holds rows of similar length: shuffle, sort within blocks of `block` batches,
    shuffle the batches. transformers' LengthGroupedSampler does the same but needs input_ids, which TRL's
    preference rows do not have before tokenizing."""
    rng = random.Random(seed)
    order = list(range(len(dataset)))
    rng.shuffle(order)
    lengths = [len(json.dumps(row, ensure_ascii=False)) for row in dataset]
    batches = []
    for start in range(0, len(order), batch_size * block):
        chunk = sorted(order[start : start + batch_size * block], key=lengths.__getitem__, reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return dataset.select([i for batch in batches for i in batch])


def _model(recipe, method: str):
    path = models.resolve(recipe.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = {"dtype": torch.bfloat16 if recipe.bf16 else torch.float32}
    if recipe.bf16 and not torch.cuda.is_available():
        # bf16 on a CPU (AMX): PyTorch's CPU flash-attention backward is slow in bf16 (a sixth of a DPO step in a
        # profile); the plain matmul attention runs on AMX and made the step 13% faster (bench/dpo.py).
        kwargs["attn_implementation"] = "eager"
    if recipe.load_in_4bit:
        if not torch.cuda.is_available():
            raise recipes.RecipeError("load_in_4bit: 4-bit QLoRA needs a CUDA GPU.")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    if methods.get(method).output == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if recipe.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing)
    return model, tokenizer, path


def _peft(recipe, method: str, model):
    """A new LoRA config, or the earlier job's adapter loaded trainable (then the trainer gets no config)."""

    if recipe.continue_from:
        folder = Path(recipe.continue_from).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise recipes.RecipeError(f"continue_from: {folder} has no adapter_config.json (not a LoRA adapter).")
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True), None
    targets = recipe.lora_target_modules
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    # Where TRL turns dropout off (disable_dropout: DPO, KTO, reward), LoRA's dropout layers would only multiply
    # by ones: left out.
    dropout = 0.0 if getattr(recipe, "disable_dropout", False) else recipe.lora_dropout
    config = LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type="CAUSAL_LM" if methods.get(method).chats else "SEQ_CLS",
    )
    return model, config


def compact_lm_head(model, outputs=("log_probs",), temperature: float = 1.0) -> None:
    """On a device without Triton (a CPU), score only the answer tokens, with one plain log_softmax.

    TRL patches the model so that `model(..., labels=..., fused_lm_head=True)` returns per-token log-probabilities
    (trl.trainer.utils.add_fused_lm_head). Without Triton it projects every position of the batch through the
    49k-word LM head, prompt and padding included, in tiles that it folds with torch ops for five statistics. Here,
    on such devices, only the positions whose label counts go through the head, and the statistics TRL logs
    (entropy, mean logit, top-1) are taken from the same logits without gradient. On CUDA, TRL's compact Triton
    kernel runs as before. Call it right after TRL's add_fused_lm_head, on the same model, with the same `outputs`:
    a statistic nobody asked for (log_sum_sq_probs is WPO's only) is not computed, each one a pass over
    [tokens, vocabulary]."""

    trl_forward = model.forward

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        head = self.get_output_embeddings()
        if (
            not fused_lm_head
            or head.weight.device.type == "cuda"
            or shift_labels is not None
            or getattr(self.config.get_text_config(), "final_logit_softcapping", None)
        ):
            return trl_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:].to(head.weight.device)
        mask = labels != -100
        logits = head(hidden.to(head.weight.device)[mask]).float() / temperature
        log_all = logits.log_softmax(-1)
        targets = labels[mask]
        picked = log_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)

        def spread(values):
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        found = {}
        with torch.no_grad():
            if "entropy" in outputs:
                found["entropy"] = spread(-(log_all.exp() * log_all).sum(-1))
            if "mean_logits" in outputs:
                found["mean_logits"] = spread(logits.mean(-1))
            if "is_top1" in outputs:
                found["is_top1"] = spread(logits.argmax(-1) == targets)
            if "log_sum_sq_probs" in outputs:
                found["log_sum_sq_probs"] = spread(torch.logsumexp(2 * log_all, dim=-1))
        log_probs = spread(picked)
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, label_mask=mask, **found)

    model.forward = types.MethodType(forward, model)


def shared_prompt_logps(model, input_ids, attention_mask, completion_mask):
    """Each row's log p(completion | prompt), summed, for a DPO batch laid out as TRL's DataCollatorForPreference lays
    it out (chosen rows, then the rejected rows of the same pairs; each row its prompt then its completion, padded
    on the right), reading each pair's prompt once instead of twice: the prompts, padded on the left, fill a
    key/value cache, and both completions of a pair continue from it. For the reference pass, where nothing needs a
    gradient: on bench/dpo.py's pairs the prompt is 45% of a row's tokens. `model` is a causal LM (its decoder is
    `model.base_model`, its head the output embeddings). Returns None where a pair's two rows do not start with the
    same prompt (a truncation that cut them differently), and the caller computes them as TRL does."""

    decoder, head = model.base_model, model.get_output_embeddings()
    device = head.weight.device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    pairs = input_ids.size(0) // 2
    prompt = attention_mask.bool() & ~completion_mask.to(device).bool()
    lengths = prompt.sum(1)
    width = int(lengths.max())
    shown = input_ids[:, :width] * prompt[:, :width]
    if (
        not torch.equal(lengths[:pairs], lengths[pairs:])
        or int(lengths.min()) == 0
        or not torch.equal(prompt[:, :width].sum(1), lengths)
        or not torch.equal(shown[:pairs], shown[pairs:])
    ):
        return None
    # The prompts, padded on the left so that every one ends in the last column.
    columns = torch.arange(width, device=device)[None, :] - (width - lengths[:pairs])[:, None]
    prompt_mask = (columns >= 0).long()
    prompt_ids = input_ids[:pairs].gather(1, columns.clamp(min=0)) * prompt_mask
    # The completions, each from the start of its row, in pairs: chosen i then rejected i (the cache's order).
    order = torch.stack([torch.arange(pairs, device=device), torch.arange(pairs, device=device) + pairs], 1).flatten()
    ends = attention_mask.sum(1)
    at = lengths[order][:, None] + torch.arange(int((ends - lengths).max()), device=device)[None, :]
    done = at < ends[order][:, None]
    completion_ids = input_ids[order].gather(1, at.clamp(max=input_ids.size(1) - 1)) * done
    cache = DynamicCache()
    prompt_positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
    prompted = decoder(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=prompt_positions,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state[:, -1:]
    cache.batch_repeat_interleave(2)
    both_mask = torch.cat([prompt_mask.repeat_interleave(2, 0), done.long()], 1)
    followed = decoder(
        input_ids=completion_ids, attention_mask=both_mask, position_ids=at, past_key_values=cache, use_cache=True
    ).last_hidden_state
    # Completion token j is predicted at the position before it: the prompt's last for j = 0.
    hidden = torch.cat([prompted.repeat_interleave(2, 0), followed[:, :-1]], 1)[done]
    picked = head(hidden).float().log_softmax(-1).gather(-1, completion_ids[done][:, None]).squeeze(-1)
    sums = torch.zeros(2 * pairs, device=device).index_add_(
        0, torch.arange(2 * pairs, device=device).repeat_interleave(done.sum(1)), picked
    )
    in_rows = torch.empty_like(sums)
    in_rows[order] = sums  # back to the batch's order: chosen rows, then rejected rows
    return in_rows


def keep_lora_inputs_in_bf16(model) -> None:
    """bf16 on a CPU: PEFT casts each LoRA layer's input to its float32 weights, and autocast casts it straight back to
    bf16 for the product: two copies of every linear layer's input, about an eighth of a DPO step in a profile. Under
    the Trainer's autocast the product is bf16 either way, so the casts are turned off (the adapter's weights, their
    gradients and the optimizer stay float32). DPO only, where every forward runs under autocast (online RL samples
    outside it, where the product needs the cast)."""

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def _with_studio_sampling(trainer_class):
    """TRL's online RL trainer, sampling its answers with the studio's decode loop (inference/decode.py's decode_tokens:
    each prompt read once for its group of answers, a key/value cache written in place, finished answers leaving
    the batch) instead of transformers' generate() (bench/rl.py: with the compact head, bf16 and the adapter folded
    in while sampling, an RLOO step on the embedded model takes 3.3 s against TRL's own path's 4.6-5.0 s in float32).
    The answers are drawn exactly as TRL's generate() would (temperature, top_p, no top_k) and end with their end
    token as TRL's do; any other sampling setting (top_k, min_p, a repetition penalty, vLLM, images) goes to TRL's
    own path."""

    class StudioSampling(trainer_class):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, *more, **named):
            # GRPO's signature adds num_generations (for vLLM) and returns log-probabilities beside the answers
            # (None: the trainer computes them), RLOO's returns the answers alone.
            grpo = isinstance(self, trl.GRPOTrainer)
            groups = []  # TRL repeats each prompt once per answer, one after another
            for ids in prompt_ids:
                if groups and groups[-1][0] == ids:
                    groups[-1][1] += 1
                else:
                    groups.append([ids, 1])
            plain = (
                not self.use_vllm
                and not getattr(self, "use_transformers_continuous_batching", False)
                and not getattr(self, "tools", None)
                and images is None
                and not multimodal_fields
                and not self.top_k
                and self.min_p is None
                and self.repetition_penalty == 1.0
                and not self.args.generation_kwargs
                and len({count for _, count in groups}) == 1
            )
            if not plain:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, *more, **named)

            width = max(len(ids) for ids, _ in groups)
            pad = self._tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in groups])
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in groups])
            model = self.accelerator.unwrap_model(self.model)
            training = model.training
            model.eval()  # transformers turns the cache off in training mode with gradient checkpointing
            try:
                rows = []
                with adapter_folded_in(model):
                    for rows in decode_tokens(
                        model,
                        input_ids,
                        mask,
                        groups[0][1],
                        self.max_completion_length,
                        lambda logits: next_tokens(logits, self.temperature, self.top_p, None),
                        set(self.eos_token_ids),
                        keep_stop=True,
                    ):
                        pass
            finally:
                model.train(training)
            answers = [list(row) for row in rows]
            return (answers, None) if grpo else answers

    return StudioSampling


def _with_shared_prompt_reference(trainer_class):
    """TRL's DPOTrainer computing the reference log-probabilities with shared_prompt_logps: the LoRA base with its
    adapter switched off (TRL's own contexts: no gradient, no checkpointing, autocast), each pair's prompt read once.
    TRL's own computation where that does not apply: a separate reference model, length-desensitised DPO (ld_alpha),
    or a batch whose rows shared_prompt_logps declines."""

    class SharedPromptReference(trainer_class):
        def __init__(self, *args, **kwargs):
            # TRL names its cache of precomputed reference log-probabilities after a hash of every weight of the
            # model (each copied to the CPU, bf16 widened to float32, through SHA-256): 32 GB for an 8B model, most
            # of a short job's time on a GPU (bench/RESULTS.md). A key of this run instead: the reference pass is
            # computed afresh for each job (a resumed one too), never read from another run's cache.
            with mock.patch.object(dpo_trainer, "hash_module", lambda module: uuid.uuid4().hex):
                super().__init__(*args, **kwargs)

        def compute_ref_log_probs(self, model, inputs):
            unwrapped = self.accelerator.unwrap_model(self.model)
            if self.ref_model is not None or self.ld_alpha is not None or not dpo_trainer.is_peft_model(unwrapped):
                return super().compute_ref_log_probs(model, inputs)
            adapter = "ref" if "ref" in unwrapped.peft_config else None
            with (
                torch.no_grad(),
                dpo_trainer.disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
                dpo_trainer.use_adapter(unwrapped, adapter_name=adapter),
                self.accelerator.autocast(),
            ):
                sums = shared_prompt_logps(
                    unwrapped.get_base_model(), inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
                )
            if sums is None:
                return super().compute_ref_log_probs(model, inputs)
            return sums.chunk(2, dim=0)

    return SharedPromptReference


def _with_compact_head(trainer_class, module, lora_inputs_in_bf16: bool = False):
    """`trainer_class` built with compact_lm_head added wherever TRL's `module` adds its fused head (DPO computes the
    reference log-probs inside the constructor, so it must be in place by then); `lora_inputs_in_bf16`: also
    keep_lora_inputs_in_bf16 on a bf16 CPU model (for DPO, whose every forward runs under autocast)."""

    add_fused_lm_head = module.add_fused_lm_head

    def add_heads(model, *args, **head_kwargs):
        add_fused_lm_head(model, *args, **head_kwargs)
        compact_lm_head(model, **{k: v for k, v in head_kwargs.items() if k in ("outputs", "temperature")})
        if lora_inputs_in_bf16 and model.dtype == torch.bfloat16 and model.device.type == "cpu":
            keep_lora_inputs_in_bf16(model)  # before the reference pass in __init__

    def build(**kwargs):
        with mock.patch.object(module, "add_fused_lm_head", add_heads):
            return trainer_class(**kwargs)

    return build


def _partial_checkpointing(share: float):
    """A callback that leaves gradient checkpointing on for `share` of the decoder layers, spread evenly, and off for
    the rest (transformers' checkpointing is a flag on each layer, which the Trainer sets on all of them when training
    begins). With half the layers, bench/dpo.py's job on a CPU ran as fast as with none at 0.8x its peak memory."""

    class PartialCheckpointing(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
            for i, layer in enumerate(layers):  # layer i is checkpointed when the running share passes a whole one
                layer.gradient_checkpointing = layer.gradient_checkpointing and int((i + 1) * share) > int(i * share)

    return PartialCheckpointing()


def run(recipe_path, resume: bool = False) -> dict:
    """Train; returns what result.json says. Raises RecipeError for a recipe that cannot run."""

    method, recipe = recipes.load(recipe_path)
    recipes.check_liger(recipe)
    job_dir = Path(recipe.output_dir)
    job_dir.mkdir(parents=True, exist_ok=True)

    # Several processes (accelerate launch): the first one loads first, so that what loading writes once (the
    # embedded model's conversion, the data set's cache) is written by one process and read by the others.
    with PartialState().main_process_first():
        dataset = _load_data(recipe, method)
        model, tokenizer, base_path = _model(recipe, method)
    if recipe.group_by_length and methods.get(method).data == "pairs":  # RL samples its own groups of prompts
        dataset = group_by_length(dataset, recipe.per_device_train_batch_size, recipe.seed)
        recipe.train_sampling_strategy = "sequential"  # the order above is the grouping
    model, peft_config = _peft(recipe, method, model)
    callbacks = [_metrics_callback(job_dir / "metrics.jsonl")]
    if recipe.gradient_checkpointing and recipe.checkpoint_share < 1:
        callbacks.append(_partial_checkpointing(recipe.checkpoint_share))
    # With a LoRA adapter and no reference model, DPO and online RL use the base with the adapter disabled as the
    # reference: one copy of the weights. The trainer is TRL's, named by the method's record: DPO and online RL with
    # the compact LM head on a CPU, DPO with the shared-prompt reference pass, online RL sampling with the studio's
    # decode loop and getting its reward functions.
    spec = methods.get(method)
    trainer_class = getattr(trl, spec.trainer)
    if method == "dpo":
        trainer_class = _with_compact_head(
            _with_shared_prompt_reference(trainer_class),
            sys.modules[trainer_class.__module__],
            lora_inputs_in_bf16=True,
        )
    elif spec.data == "prompts":
        trainer_class = _with_compact_head(_with_studio_sampling(trainer_class), sys.modules[trainer_class.__module__])
    extra = {}
    if spec.data == "prompts":
        try:
            extra["reward_funcs"] = rewards.build(recipe, job_dir)
        except ValueError as error:
            raise recipes.RecipeError(str(error)) from None
    trainer = trainer_class(
        model=model,
        args=recipe,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        **extra,
    )
    checkpoint = get_last_checkpoint(recipe.output_dir) if resume and Path(recipe.output_dir).is_dir() else None
    if resume and checkpoint is None:
        raise recipes.RecipeError(f"--resume: no checkpoint in {recipe.output_dir} to resume from.")
    trainer.train(resume_from_checkpoint=checkpoint)
    step = trainer.state.global_step
    if STOP.is_set():
        return {"status": "stopped", "step": step, "checkpoint": get_last_checkpoint(recipe.output_dir)}
    adapter = Path(recipe.output_dir) / ADAPTER
    trainer.save_model(str(adapter))  # every process calls it; the first one writes
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(adapter))
    return {
        "status": "finished",
        "step": step,
        "adapter": str(adapter),
        "base_model": recipe.model,
        "base_path": base_path,
        "method": method,
        "processes": recipe.world_size,
        "use_liger_kernel": recipe.use_liger_kernel,  # detected where it trained when the recipe does not say
    }


def _result_dir(recipe_path) -> Path:
    """The recipe's output_dir (the job folder when the UI made it), or the recipe's folder if it does not load."""
    try:
        folder = Path(recipes.load(recipe_path)[1].output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except (recipes.RecipeError, OSError, TypeError):
        return Path(recipe_path).resolve().parent


def peak_memory() -> tuple[int, str]:
    """This process's peak memory so far: what PyTorch allocated on the GPU, else the process's peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated(), "gpu"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ram"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio train", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="job_dir/recipe.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the job")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: STOP.set())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not torch.cuda.is_available():  # several processes on a CPU: accelerate joins them with gloo only when
            os.environ["ACCELERATE_USE_CPU"] = "true"  # told the CPU is meant (else each trains alone)
    result_path = _result_dir(args.recipe) / "result.json"
    result_path.unlink(missing_ok=True)
    try:
        result = run(args.recipe, args.resume)
    except recipes.RecipeError as error:
        result = {"status": "failed", "error": str(error)}
        print(f"error: {error}", file=sys.stderr)
    except Exception as error:  # any crash: recorded for the UI, traceback in the log
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    result["peak_memory_bytes"], result["peak_memory_of"] = peak_memory()
    if os.environ.get("RANK", "0") == "0":  # several processes (accelerate launch): the first one reports
        result_path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0 if result["status"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
