"""Logits of a saved model directory under Hugging Face transformers, the peer implementation.

Usage: hf_reference.py MODEL_DIR IDS_JSON
Prints one JSON object: {"logits": [[...]], "transformers": version}, or {"skip": reason} when
torch or transformers cannot be imported (the C++ test then reports itself as skipped).
"""
import json
import sys

try:
    import torch
    import transformers
except ImportError as error:  # the test machine may not have the peer installed
    print(json.dumps({"skip": f"transformers is not importable by {sys.executable}: {error}"}))
    sys.exit(0)

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
model_dir, ids = sys.argv[1], json.loads(sys.argv[2])
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
model.eval()
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
print(json.dumps({"logits": logits.tolist(), "transformers": transformers.__version__}))
