"""The report of a training run: pictures, evaluation, and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path

import joblib

from torch_infogan.errors import InfoGANError
from torch_infogan.evaluation import disentanglement, evaluate, format_table
from torch_infogan.pictures import (code_rows_grid, plot_bounds, plot_confusions, plot_importance, plot_priors,
                                    sample_grid, traversal_grid, traversal_names)
from torch_infogan.trainer import FitResult, Trainer


def write_report(trainer: Trainer, fit: FitResult, out: str | Path
                 ) -> tuple[list[Path], dict | None, dict | None]:
    """Write samples, traversals, the MI-bound curves, evaluation (of categorical codes: against the labels
    where the data has them, label-free scores always), the
    disentanglement metrics and DCI heat map (when it has factor labels) and ``report.md`` into ``out``;
    returns the files written, the evaluation and the disentanglement scores (None where not computed)."""
    out = Path(out)
    info, generator = trainer.info, trainer.generator
    files = [sample_grid(generator, info, out / "samples.png")]
    for key, dim, stem in traversal_names(info):
        files.append(traversal_grid(generator, info, key, out / f"{stem}.png", dim=dim))
    if trainer.full_data.factors is not None:
        codes_png = code_rows_grid(generator, info, out / "codes.png")
        if codes_png is not None:
            files.append(codes_png)
    files.append(plot_bounds(fit.records, info.entropies(), out / "mi_bounds.png"))
    evaluation = None
    if any(code.num_clusters for code in info.codes):
        evaluation = evaluate(generator, info, trainer.full_data, trained_labels=trainer.labelled)
        (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
        files.append(out / "evaluation.json")
        files.extend(plot_confusions(evaluation, out))
        files.extend(plot_priors(evaluation, out))
    scores, skipped = None, None
    if trainer.full_data.factors is not None:
        points = min(20000, len(trainer.full_data))
        num_test = min(5000, points // 3)
        try:
            scores = disentanglement(info, trainer.full_data, points=points, num_train=min(10000, points - num_test),
                                     num_test=num_test, seed=trainer.config.seed,
                                     n_jobs=min(joblib.cpu_count(), trainer.full_data.factors.shape[1]))
        except InfoGANError as exc:  # e.g. one code dimension: the run itself is fine, the report says why
            skipped = str(exc)
        else:
            (out / "disentanglement.json").write_text(json.dumps(scores, indent=2))
            files.append(out / "disentanglement.json")
            files.append(plot_importance(scores["dci"]["importance"], scores["codes"], scores["factors"],
                                         out / "dci_importance.png"))
    (out / "report.md").write_text(_markdown(trainer, fit, evaluation, files, scores, skipped))
    files.append(out / "report.md")
    return files, evaluation, scores


def _markdown(trainer: Trainer, fit: FitResult, evaluation: dict | None, files: list[Path],
              scores: dict | None = None, skipped: str | None = None) -> str:
    config = trainer.config
    lines = ["# InfoGAN training report", "",
             f"- preset `{config.preset}`, data `{trainer.data.name}` ({len(trainer.data)} images, "
             f"{'x'.join(map(str, trainer.data.image_shape))})",
             f"- codes `{trainer.info.spec}`, noise {config.noise_dim}, batch {config.batch_size}, "
             f"{trainer.step_index} iterations, seed {config.seed}",
             *([f"- {trainer.data.note}; images per class {trainer.data.class_counts()}"] if trainer.data.note else []),
             f"- device {trainer.device}, precision {trainer.precision}: {fit.seconds:.0f} s, "
             f"{fit.images_per_second:.0f} images/s"]
    extras = [text for on, text in (
        (config.translate, f"D's images shifted by up to {config.translate} px"),
        (config.rotate, f"turned by up to {config.rotate:g} degrees"),
        (config.iic, f"IIC weight {config.iic:g}"),
        (config.consistency, f"consistency weight {config.consistency:g}"),
        ((config.iic or config.consistency) and config.pair_shear, f"their copies slanted by up to {config.pair_shear:g}"),
        ((config.iic or config.consistency) and config.pair_intensity,
         f"their copies' tones changed by a gamma of up to e^{config.pair_intensity:g}"),
        (config.invariance, f"G's categories named on turned, scaled and slanted copies (weight {config.invariance:g})"),
        (config.contrastive, f"contrastive weight {config.contrastive:g} from iteration {config.contrastive_start}"),
    ) if on]
    lines += [f"- beyond the GAN and its MI term: {', '.join(extras)}", ""] if extras else [""]
    if fit.records:
        last = fit.records[-1]
        lines += ["## Final MI lower bounds (nats)", "",
                  "`bound`: Q as trained (a continuous code's Q std as configured, 1 by default); "
                  "`bound, fitted variance`: the same Q means with the variance fitted to their error "
                  "(also a valid lower bound, and the one that shows what a continuous code carries).", "",
                  "| code | bound | bound, fitted variance | H(c) |", "| --- | --- | --- | --- |"]
        fitted = last.get("mi_fitted", {})
        for key, h in trainer.info.entropies().items():
            lines.append(f"| {key} | {last['mi'][key]:.3f} | {fitted.get(key, float('nan')):.3f} | {h:.3f} |")
        lines.append("")
    if evaluation:
        title = "against the labels" if evaluation["labelled"] else "on the data (no labels: label-free scores only)"
        lines += [f"## Categorical codes {title}", "", "```", format_table(evaluation), "```", ""]
    if scores:
        from torch_infogan.disentanglement import format_scores

        lines += ["## Disentanglement against the data's factors", "", "```", format_scores(scores), "```", ""]
    elif skipped:
        lines += ["## Disentanglement against the data's factors", "", f"Not computed: {skipped}", ""]
    lines += ["## Pictures", ""]
    for path in files:
        if path.suffix == ".png":
            lines.append(f"![{path.stem}]({path.name})")
    return "\n".join(lines) + "\n"
