"""Prompt text -> token ids, the one rule every engine uses: a pretrained chat model's prompts go
through its chat template (thinking off); the tiny model, which has none, takes the prompt and a
newline (`encode_pair`, which the tiny model's builder, `marl.tiny`, trains on). This module
imports no model builder, so an engine that only tokenises pays for none."""
from __future__ import annotations

from transformers import AutoTokenizer


def encode_pair(tok, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """The tiny format: prompt, newline, response, EOS (no chat template)."""
    return tok.encode(prompt + "\n"), tok.encode(response) + [tok.eos_token_id]


def load_tokenizer(path: str, local_files_only: bool = False):
    """(tokenizer, chat) from a local HF directory (or cached hub id); a pad token is set where the
    model has none."""
    tok = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, tok.chat_template is not None


def encode_prompt(tok, chat: bool, prompt: str) -> list[int]:
    if chat:
        return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=True, enable_thinking=False, return_dict=False)
    return encode_pair(tok, prompt, "")[0]


def prompt_text(tok, chat: bool, prompt: str, **template_kw) -> str:
    """The same rule as text, for a server that tokenises it (engine=openai's completions API):
    `encode_prompt`'s ids are this text's tokens. `template_kw` (e.g. enable_thinking) reach the
    chat template; thinking is off unless they say otherwise."""
    if chat:
        return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False, **{"enable_thinking": False, **template_kw})
    return prompt + "\n"
