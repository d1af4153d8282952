"""Scoring answers: the reward model of a finished reward-model job."""

import json
from pathlib import Path

from studio.prompts import prompt_messages


class RewardScorer:
    """A reward-model job's adapter on its base (AutoModelForSequenceClassification): higher scores = preferred."""

    def __init__(self, adapter_folder):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(adapter_folder)
        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = PeftModel.from_pretrained(model, str(folder)).eval()

    def score(self, prompt: dict, answers: list[str]) -> list[float]:
        """One score per answer to `prompt` (a prompt row: text, system, context)."""
        import torch

        texts = [self.tokenizer.apply_chat_template(prompt_messages(prompt) + [{"role": "assistant", "content": a}],
                                                    tokenize=False) for a in answers]
        self.tokenizer.padding_side = "right"
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            return self.model(**batch).logits[:, 0].tolist()
