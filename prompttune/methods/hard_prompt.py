"""Hard prompts: a text template around the input and a verbalizer, scored zero-shot.

Schick & Schütze, "Exploiting Cloze Questions for Few Shot Text Classification" (PET, EACL 2021)
for templates and verbalizers; Gao, Fisch & Chen (LM-BFF, ACL 2021) for the templates' form. Nothing
trains: the template lives in the task config (`--template`), and the readout is the LM head at the
mask (or next token, or first decoder token), or, for a backbone without an LM head, the embedding
similarity between the input and each label's description.
"""

from __future__ import annotations

from ..method_options import HardPromptConfig
from .base import PromptMethod, register


@register
class HardPrompt(PromptMethod):
    name = "hard_prompt"
    Config = HardPromptConfig
    trains = False
    readout = "zero_shot"
