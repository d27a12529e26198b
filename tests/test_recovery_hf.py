"""The Hugging Face Trainer callback on a tiny randomly initialised BERT (nothing downloaded)."""

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="the Trainer needs accelerate")

from secateurs.core.masks import masked_parameters  # noqa: E402
from secateurs.recovery import Gradual  # noqa: E402
from secateurs.recovery.hf import STATE_FILE, PruningCallback  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)


def dataset():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 40, (64, 8), generator=generator)
    return [{"input_ids": row, "labels": int(row[0] > 20)} for row in ids]


def trainer(model, output_dir, callback):
    args = transformers.TrainingArguments(
        output_dir=str(output_dir), max_steps=8, per_device_train_batch_size=16, learning_rate=1e-3, save_steps=4,
        save_strategy="steps", logging_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=dataset(), callbacks=[callback])


def masks_of(model):
    return {name: mask.clone() for name, _, _, mask in masked_parameters(model)}


def test_callback_prunes_on_schedule_keeps_zeros_and_resumes_from_trainer_checkpoints(tmp_path):
    schedule = Gradual(0.5, begin=1, end=6, frequency=2)
    model = tiny_bert()
    callback = PruningCallback(schedule, unit="step")
    trainer(model, tmp_path, callback).train()
    masks = masks_of(model)
    assert masks and "classifier.weight" not in masks and not any("embeddings" in n for n in masks)
    kept = sum(int(m.sum()) for m in masks.values())
    assert 1 - kept / sum(m.numel() for m in masks.values()) == pytest.approx(0.5, abs=0.01)
    for _, module, name, mask in masked_parameters(model):
        assert torch.equal(module._parameters[name].detach()[~mask], torch.zeros(int((~mask).sum())))
    assert [e.position for e in callback.controller.history] == [3, 5, 6]
    assert os.path.isfile(tmp_path / "checkpoint-4" / STATE_FILE)

    resumed_model = tiny_bert()
    resumed = PruningCallback(schedule, unit="step")
    trainer(resumed_model, tmp_path, resumed).train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert [e.position for e in resumed.controller.history] == [3, 5, 6]
    assert resumed.controller.steps == 8
    resumed_masks = masks_of(resumed_model)
    assert resumed_masks.keys() == masks.keys()
    assert all(torch.equal(masks[n], resumed_masks[n]) for n in masks)


def test_callback_refuses_shrinking():
    from secateurs.errors import PruningError

    with pytest.raises(PruningError, match="owns its optimizer"):
        PruningCallback(Gradual(0.5, end=4), granularity="channel", shrink=True)
