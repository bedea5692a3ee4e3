"""The eight questions the theory ends with, and the claims of its answers that the report tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    number: int
    title: str
    question: str
    claims: tuple[str, ...]  # the seed's answer, claim by claim, as the report tests it
    pages: tuple[str, ...] = ()  # earlier measurements in docs/ (relative to docs/)


QUESTIONS = {q.number: q for q in (
    Question(1, "Attention fusion trade-offs",
             "What are the trade-offs between sequential, parallel and hierarchical fusion of self- and "
             "cross-attention, and which architecture is optimal?",
             ("Sequential fusion integrates information better at a higher latency; parallel fusion is faster "
              "but may lose information; hierarchical fusion is best but complex.",
              "Sequential is optimal for high-quality generation, parallel for fast inference.",
              "Multi-loss weighting and curricula shape what a model learns (the training theory's "
              "curriculum and loss-balancing claims)."),
             ("results/fusion.md", "results/training.md")),
    Question(2, "Sparsity versus quality",
             "What are the sparsity-quality trade-offs of efficient cross-attention?",
             ("Higher sparsity saves computation O(HW k) but loses text information; an optimal "
              "k* = argmin [Quality_loss(k) + lambda Cost(k)] exists.",
              "Quality degradation is bounded by the information lost from discarded tokens, "
              "I(A_sparse; A_dense)."),
             ("results/sparse.md",)),
    Question(3, "Hierarchical attention",
             "How do word-, phrase- and sentence-level attention (A = sum_i lambda_i A_i) affect compositional "
             "generation?",
             ("Word level gives fine control, phrase level compositional understanding, sentence level global "
              "consistency; hierarchical attention improves compositional generation.",
              "The optimal lambdas depend on the text's complexity."),
             ("results/sparse.md",)),
    Question(4, "Optimal prompt design",
             "How should a prompt be designed given information content, compositional complexity and "
             "controllability?",
             ("Longer prompts provide more constraints but with diminishing returns.",
              "The optimal prompt maximises I(tau; x) per unit of length: specific words over generic ones."),
             ("results/prompts.md",)),
    Question(5, "Compositional binding",
             "How do word interactions and attribute binding work in text-to-image generation?",
             ("Word effects interact: f(w1, w2) != f(w1) + f(w2).",
              "Binding accuracy B = P(bind(attribute, object)) measures how cross-attention associates "
              "attributes with objects; the binding problem is the hard part of composition."),
             ("results/prompts.md",)),
    Question(6, "Decomposition strategies",
             "How do global-local, hierarchical and aspect-based prompt decompositions compare in information, "
             "quality and controllability?",
             ("Global-local enables coarse-to-fine control, hierarchical matches language structure, "
              "aspect-based enables independent attribute control.",
              "Aspect-based decomposition is optimal for synthetic images; fine-grained decomposition gives "
              "more precise control at the cost of more complex conditioning."),
             ()),
    Question(7, "Multi-modal consistency",
             "How should consistency between modalities be traded against each other and against compute?",
             ("Conflicting modalities require priority weighting; complementary modalities reinforce each "
              "other.",
              "Perfect consistency may reduce quality; more modalities cost more compute."),
             ("results/control.md",)),
    Question(8, "Scaling laws",
             "How do text-to-image scaling laws connect to information and compute?",
             ("Quality follows a power law in model size, data and compute: Quality ~ N^alpha D^beta C^gamma.",
              "Optimal scaling balances model capacity with the available information and compute."),
             ("results/scaling.md",)),
)}

__all__ = ["QUESTIONS", "Question"]
