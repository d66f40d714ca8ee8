"""Which environment variables hold which platform's key: a table with no imports,
so that the ``agent`` command can name it in its help without loading the parsers
of ``client._sources``."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

__all__ = ["KNOWN_VARIABLES", "EXEC_GUARD"]

# Variable -> platform, in order of preference when several name the same platform.
# The first variable of each platform is the one `agent exec --platform` sets.
KNOWN_VARIABLES: Final[Mapping[str, str]] = {
    "HF_TOKEN": "huggingface",
    "HUGGING_FACE_HUB_TOKEN": "huggingface",
    "HUGGINGFACEHUB_API_TOKEN": "huggingface",
    "WANDB_API_KEY": "wandb",
    "RUNPOD_API_KEY": "runpod",
    "LAMBDA_API_KEY": "lambdalabs",
    "LAMBDALABS_API_KEY": "lambdalabs",
    "VAST_API_KEY": "vastai",
    "VASTAI_API_KEY": "vastai",
    "OPENAI_API_KEY": "openai",
    "ANTHROPIC_API_KEY": "anthropic",
    "REPLICATE_API_TOKEN": "replicate",
    "TOGETHER_API_KEY": "together",
    "GROQ_API_KEY": "groq",
    "MISTRAL_API_KEY": "mistral",
    "COHERE_API_KEY": "cohere",
    "NEPTUNE_API_TOKEN": "neptune",
    "COMET_API_KEY": "comet",
}
# Set in the environment of a command started by `agent exec` (like aws-vault's AWS_VAULT).
EXEC_GUARD: Final = "CREDENTIAL_AGENT_EXEC"
