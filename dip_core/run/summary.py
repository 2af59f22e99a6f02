"""One run's report in one line: what `dip run` prints, what `dip ui` shows and what `dip batch` keeps per image."""

from __future__ import annotations

from dip_core.run.report import Report


def chooser(report: Report) -> str:
    """Which automatic rule chose the output, with the noise level it compared the loss with."""
    if report.get("auto_rule") != "discrepancy":
        return "the output variance (ES-WMV)"
    stopping = report.get("stopping", {})
    if stopping.get("peak") is not None:
        level, source = f"peak {stopping['peak']:.3g} photons", stopping.get("peak_source", "")
    elif stopping.get("fit_level_db") is not None:
        return f"the fit level (the input fitted to {stopping['fit_level_db']:g} dB)"
    elif stopping.get("noise_sigma") is not None:
        level, source = f"sigma {stopping['noise_sigma']:.1f}", stopping.get("noise_sigma_source", "")
        if stopping.get("noise_level_sigma") is not None:
            source += f"; the image holds less, {stopping['noise_level_sigma']:.1f}, the level used"
    else:
        return "the noise level"
    return f"the noise level ({level}{', ' + source if source else ''})"


def summary_line(report: Report) -> str:
    """The run's task, backend, iterations and speed, its PSNR with a reference (and what a run without one gets),
    which output was kept and why, and whether auto-stop ended it."""
    rep, n = report, report["iters"]
    method = f" with {rep['method']}" if rep.get("method", "dip") != "dip" else ""  # DRP; the paper's DIP unsaid
    line = f"{rep['task']}{method} on {rep['backend']} ({rep['device']}, {rep['precision']}): "
    line += f"{n} iteration{'s' * (n != 1)}"
    line += f", {rep['ms_per_iter']:.1f} ms/iter"
    if "tiles" in rep:
        done, total = len(rep["tiles"]), rep["tiles_total"]
        count = f"{done} tile{'s' * (done != 1)}" if done == total else f"{done} of {total} tiles"
        line += f" over {count} of {rep['tile']} px (overlap {rep['overlap']})"
        if rep.get("psnr_result") is not None:
            line += f"; PSNR input {rep['psnr_input']:.2f} dB -> result {rep['psnr_result']:.2f} dB"
    elif rep.get("psnr") is not None:
        pasted = " (known pixels pasted back)" if rep.get("keep_known") else ""
        which = "the last output" if rep.get("selection") == "last" else "the best output against the reference"
        line += (
            f"; PSNR input {rep['psnr_input']:.2f} dB -> result {rep['psnr_result']:.2f} dB{pasted}: {which}, "
            f"iteration {rep['result_iter']}; SSIM {rep['ssim']:.3f}"
        )
        if rep.get("psnr_auto") is not None:
            line += (
                f"; without a reference: {rep['psnr_auto']:.2f} dB, iteration {rep['stop_iter']} "
                f"chosen by {chooser(rep)}"
            )
    else:
        chosen = f"chosen by {chooser(rep)}" if rep["selection"] == "wmv" and rep.get("stop_iter") else "the last"
        line += f"; result from iteration {rep['result_iter']} ({chosen})"
    if rep.get("stopped_early"):
        line += f"; auto-stop ended the run at {rep['iters']} of {rep['iters_planned']}"
    return line
