"""Distillation loss against a hand computation; the Distiller inside the fit loop."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from secateurs import prune
from secateurs.errors import PruningError
from secateurs.recovery import Distiller, fit, kd_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def softmax(values, temperature):
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def hand_kd(student_rows, teacher_rows, temperature):
    total = 0.0
    for s, t in zip(student_rows, teacher_rows):
        p_s, p_t = softmax(s, temperature), softmax(t, temperature)
        total += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    return total / len(student_rows) * temperature**2


def test_kd_loss_matches_hand_computation():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 2.0]]
    teacher = [[0.5, 1.0, 3.0], [1.0, 1.0, 1.0]]
    for temperature in (1.0, 2.0, 4.0):
        got = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature)
        assert float(got) == pytest.approx(hand_kd(student, teacher, temperature), rel=1e-5)
    assert float(kd_loss(torch.tensor(teacher), torch.tensor(teacher), 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_averages_over_positions_of_sequence_logits():
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    flat = kd_loss(student.reshape(10, 7), teacher.reshape(10, 7), 2.0)
    assert torch.allclose(kd_loss(student, teacher, 2.0), flat)
    with pytest.raises(PruningError, match="same output layer"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_distiller_combines_task_soft_and_hidden_losses_as_documented():
    torch.manual_seed(0)
    teacher = Net()
    student = copy.deepcopy(teacher)
    prune(student, 0.5, include="body")
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    distiller = Distiller(teacher, temperature=3.0, alpha=0.25, hidden=["body"], hidden_weight=0.5)
    out = distiller(student, x, y)
    with torch.no_grad():
        t_hidden, s_hidden = teacher.body(x), student.body(x)
        t_logits, s_logits = teacher(x), student(x)
    expected = (
        0.75 * F.cross_entropy(s_logits, y)
        + 0.25 * hand_kd(s_logits.tolist(), t_logits.tolist(), 3.0)
        + 0.5 * F.mse_loss(s_hidden, t_hidden)
    )
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert set(out.parts) == {"task", "kd", "hidden"}
    out.loss.backward()
    assert student.body.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen


def test_distiller_without_labels_is_pure_kd_and_checks_hidden_shapes():
    teacher, student = Net(), Net()
    x = torch.randn(3, 4)
    out = Distiller(teacher, temperature=2.0)(student, x)
    assert float(out.loss.detach()) == pytest.approx(float(kd_loss(student(x), teacher(x), 2.0).detach()), rel=1e-5)
    student.body, student.head = nn.Linear(4, 5), nn.Linear(5, 3)  # as if shrunk
    with pytest.raises(PruningError, match="width is kept"):
        Distiller(teacher, hidden=["body"])(student, x)
    with pytest.raises(PruningError, match="no module named"):
        Distiller(teacher, hidden=["nope"])(student, x)
    with pytest.raises(PruningError, match="alpha"):
        Distiller(teacher, alpha=1.5)


def test_fit_with_a_distiller_pulls_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = Net()
    x = torch.randn(256, 4)
    y = teacher(x).argmax(dim=1).detach()
    student = Net()
    before = float(kd_loss(student(x), teacher(x), 1.0).detach())
    fit(student, (x, y), epochs=3, distiller=Distiller(teacher, alpha=1.0, temperature=1.0), lr=1e-2, batch_size=32)
    assert float(kd_loss(student(x), teacher(x), 1.0).detach()) < before / 2
