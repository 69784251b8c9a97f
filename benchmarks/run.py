"""Run every benchmark, each in its own process, and write one Markdown table of ratios vs targets.

    .venv/bin/python benchmarks/run.py [--only NAME ...] [--out benchmarks/results.md]
    make bench                                   (installs the bench extra, TRL, first)

The table goes to ``--out`` and replaces the results section of ``benchmarks/README.md``.
Every ratio is of two things measured in the same run on the same machine; absolute times
come with the machine line. Nothing here asserts a time: a missed target is reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "orchestration": "orchestration.py",
    "vllm": "vllm_overhead.py",
    "training": "training.py",
    "judge": "judge.py",
    "memory": "memory.py",
    "gpu": "gpu.py",
    "reduction": "reduction.py",
    "weight_push": "weight_push.py",
    "plan": "plan_check.py",
    "gpu_train": "gpu_train.py",
    "logprobs": "logprobs.py",
    "roofline": "roofline.py",
    "judge_audit": "judge_audit.py",
    "demo_step": "demo_step.py",
    "decode_attention": "decode_attention.py",
    "sampling": "sampling.py",
    "prefix_sharing": "prefix_sharing.py",
    "eval_batch": "eval_batch.py",
}
# memory.py's comparisons: (LoRA variant, full variant)
COMPARED = [("lora", "full"), ("lora", "full_6"), ("lora_gc", "full_gc"), ("lora_gc", "full_6_gc")]
BEGIN, END = "<!-- results: written by benchmarks/run.py -->", "<!-- end of results -->"


def measure(name: str, folder: Path) -> dict[str, Any]:
    out = folder / f"{name}.json"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / SCRIPTS[name]), "--json", str(out)], cwd=HERE, check=False)
    if done.returncode != 0 or not out.exists():
        return {"error": f"{SCRIPTS[name]} exited with status {done.returncode}"}
    result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - start
    print(f"{name}: done in {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return result


def verdict(value: float, target: float, at_most: bool) -> str:
    met = value <= target if at_most else value >= target
    return "met" if met else "**missed**"


def rows(results: dict[str, Any]) -> list[list[str]]:
    """| measure | measured | baseline | ratio | target | verdict |"""
    out: list[list[str]] = []

    def orchestration(r: dict[str, Any]) -> None:
        o = r["overhead"]
        out.append(
            [
                f"Orchestration overhead, {o['rounds']} rounds (wall / backend time)",
                f"{o['wall_s']:.1f} s wall",
                f"{o['backend_s']:.1f} s in `generate`",
                f"{o['ratio']:.3f}",
                "<= 1.05",
                verdict(o["ratio"], 1.05, True),
            ]
        )
        s = r["scaling"]
        sizes = ", ".join(f"{x['rounds']}: {x['wall_s']:.1f} s" for x in s["rows"])
        out.append(["Round collection vs batch (rounds)", sizes, "", f"exponent {s['exponent']:.2f}", "report", ""])

    def vllm(r: dict[str, Any]) -> None:
        v = r["vllm"]
        out.append(
            [
                f"vLLM backend / raw `LLM.generate`, {v['prompts']} prompts x {v['max_tokens']} tokens",
                f"{v['ours_tokens_per_s']:.1f} tok/s",
                f"{v['raw_tokens_per_s']:.1f} tok/s",
                f"{v['ratio']:.3f}",
                ">= 0.95",
                verdict(v["ratio"], 0.95, False),
            ]
        )

    def training(r: dict[str, Any]) -> None:
        d = r["dpo_vs_trl"]
        out.append(
            [
                f"DPO loss + backward, {d['pairs']} pairs x {d['completion_tokens']} tokens (ours / TRL)",
                f"{d['ours_s']:.2f} s, loss {d['ours_loss']:.6f}",
                f"{d['trl_s']:.2f} s, loss {d['trl_loss']:.6f}",
                f"{d['ratio']:.2f}",
                "<= 1.0",
                verdict(d["ratio"], 1.0, True),
            ]
        )
        s = r["step_scaling"]
        by_batch = ", ".join(f"{k}: {v:.2f} s" for k, v in s["by_batch"].items())
        by_length = ", ".join(f"{k}: {v:.2f} s" for k, v in s["by_length"].items())
        out.append(["Update vs pairs (tiny model)", by_batch, "", f"exponent {s['batch_exponent']:.2f}", "report", ""])
        out.append(
            ["Update vs length (tiny model)", by_length, "", f"exponent {s['length_exponent']:.2f}", "report", ""]
        )
        p = r["push_share"]
        for kind in ("lora", "full"):
            out.append(
                [
                    f"Weight push ({kind}) / CPU demo step with vLLM rollouts",
                    f"{p[f'{kind}_push_s']:.2f} s",
                    f"{p['step_s']:.1f} s step",
                    f"{p[f'{kind}_share']:.3f}",
                    "< 0.10",
                    verdict(p[f"{kind}_share"], 0.10, True),
                ]
            )

    def judge(r: dict[str, Any]) -> None:
        for kind, options in (("pairwise", "A/B"), ("pointwise", "0-10")):
            j = r[kind]
            out.append(
                [
                    f"Log-prob judge, {r['items']} {kind} items ({options}): one forward / one per option",
                    f"{j['choice_s']:.1f} s",
                    f"{j['per_option_s']:.1f} s",
                    f"{j['ratio']:.2f}",
                    "report",
                    f"verdicts within {j['max_verdict_difference']:.0e}",
                ]
            )

    def judge_audit(r: dict[str, Any]) -> None:
        out.append(
            [
                f"{r['config']}, {r['steps']}-step runs (median of {r['rounds']}, in turns): "
                f"judge.audit on (LLM re-scores {r['fraction']:g}) / off",
                f"{r['audited_s']:.1f} s",
                f"{r['plain_s']:.1f} s",
                f"{r['wall_ratio']:.2f}",
                "report",
                f"in-run (steps + re-scoring) / steps {r['in_run_ratio']:.2f}",
            ]
        )

    def memory(r: dict[str, Any]) -> None:
        m = r["rows"]
        for lora, full in COMPARED:
            ratio = m[lora]["setup_mib"] / m[full]["setup_mib"]
            out.append(
                [
                    f"Peak memory above imports, {lora} / {full}",
                    f"{m[lora]['setup_mib']:.0f} MiB",
                    f"{m[full]['setup_mib']:.0f} MiB",
                    f"{ratio:.2f}",
                    "<= 0.25",
                    verdict(ratio, 0.25, True),
                ]
            )

    def gpu(r: dict[str, Any]) -> None:
        if "skipped" in r:
            out.append(["0.5B Llama bf16 training step (GPU)", "not measured", r["skipped"], "", "report", ""])
            return
        for row in r["rows"]:
            out.append(
                [
                    f"{row['parameters'] / 1e6:.0f}M Llama bf16, {row['mode']} (GPU)",
                    f"{row['tokens_per_s']:.0f} tok/s",
                    f"{row['tflops']:.1f} TFLOP/s",
                    f"MFU {row['mfu']:.2f}",
                    "report",
                    "",
                ]
            )

    def reduction(r: dict[str, Any]) -> None:
        out.append(
            [
                f"Gradient reduction, 2 processes, {r['tensors']} tensors: FSDP2 reduce-scatter / per-tensor all-reduce",
                f"{r['engine_reduce_s'] * 1e3:.0f} ms",
                f"{r['per_tensor_reduce_s'] * 1e3:.0f} ms",
                f"{r['ratio']:.2f}",
                "report",
                f"backward + reduction {r['backward_ratio']:.2f}",
            ]
        )
        if "ddp_ratio" in r:  # parallel.sharding=none: DDP's reduction overlaps the backward, compared whole
            out.append(
                [
                    f"Backward + gradient reduction, 2 processes: DDP ({r['ddp_buckets']} buckets) / per-tensor all-reduce",
                    f"{r['ddp_backward_s']:.2f} s",
                    f"{r['per_tensor_backward_s']:.2f} s",
                    f"{r['ddp_ratio']:.2f}",
                    "report",
                    "",
                ]
            )

    def weight_push(r: dict[str, Any]) -> None:
        for kind in ("lora", "full"):
            p = r[kind]
            out.append(
                [
                    f"Weight push ({kind}) through `vllm serve` / {Path(r['config']).stem} step on the server",
                    f"{p['push_s']:.2f} s",
                    f"{p['step_s']:.1f} s step",
                    f"{p['ratio']:.3f}",
                    "< 0.10",
                    verdict(p["ratio"], 0.10, True),
                ]
            )

    def plan(r: dict[str, Any]) -> None:
        measured = "peak of live CPU tensors" if r.get("measure") == "live" else "peak RSS above imports"
        for case, row in r["rows"].items():
            ratio = row["plan_over_measured"]
            out.append(
                [
                    f"`advgame plan` / measured {measured}, {case}",
                    f"{row['planned_mib']:.0f} MiB",
                    f"{row['measured_mib']:.0f} MiB",
                    f"{ratio:.2f}",
                    "within 15%",
                    "met" if abs(ratio - 1) <= 0.15 else "**missed**",
                ]
            )

    def gpu_train(r: dict[str, Any]) -> None:
        if "skipped" in r:
            out.append(["3 DPO-MD steps, 0.5B Llama, full FT (GPU)", "not measured", r["skipped"], "", "report", ""])
            return
        out.append(
            [
                f"3 DPO-MD steps, {r['parameters'] / 1e6:.0f}M Llama: peak GPU memory / `advgame plan`",
                f"{r['peak_memory_gib']:.1f} GiB",
                f"plan {r['plan_learner_gib']:.1f} GiB",
                f"{r['plan_over_measured']:.2f}",
                "within 15%",
                "met" if abs(r["plan_over_measured"] - 1) <= 0.15 else "**missed**",
            ]
        )
        out.append(
            [
                "the same, the update (GPU)",
                f"{r['update_tokens_per_s']:.0f} tok/s",
                f"{r['update_tflops']:.1f} TFLOP/s",
                f"MFU {r['mfu']:.2f}",
                "report",
                "",
            ]
        )

    def logprobs(r: dict[str, Any]) -> None:
        full, chunked = r["full"], r["chunked"]
        out.append(
            [
                f"Log-probs + backward, peak memory above the model, {r['batch']} x {r['positions']} positions, "
                f"vocabulary {full['vocabulary']}, checkpointing {'on' if r['checkpointing'] else 'off'} "
                "(chunked / full logits)",
                f"{chunked['peak_above_mib']:.0f} MiB, log-prob sum {chunked['logp_sum']:.4f}",
                f"{full['peak_above_mib']:.0f} MiB, log-prob sum {full['logp_sum']:.4f}",
                f"{r['peak_ratio']:.3f}",
                "report",
                "",
            ]
        )

    def roofline(r: dict[str, Any]) -> None:
        m = r["matmul"]
        fp32, bf16 = m["float32"]["peak_gflops"], m["bfloat16"]["peak_gflops"]
        threads = f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}"
        out.append(
            [
                f"Matmul peak at the bundled model's shapes, {threads}: bfloat16 / float32",
                f"{bf16:.0f} GFLOP/s",
                f"{fp32:.0f} GFLOP/s",
                f"{m['bf16_over_fp32']:.2f}",
                "report",
                "",
            ]
        )
        if "bandwidth" in r:
            out.append(
                ["Memory bandwidth (512 MiB copy)", f"{r['bandwidth']['gb_per_s']:.1f} GB/s", "", "", "report", ""]
            )
        if "rollout" in r:
            o = r["rollout"]
            shared = o["shared"]
            out.append(
                [
                    f"Rollout, demo defender batch ({o['rows']} rows, {o['answers_per_prompt']} per prompt, "
                    f"{o['max_tokens']} tokens): 2·N·generated tokens/s / float32 peak",
                    f"{shared['tokens_per_s']:.0f} tok/s",
                    f"cap {o['tokens_per_s_cap_fp32']:.0f} tok/s",
                    f"{shared['model_fraction_of_peak']:.2f}",
                    ">= 0.5",
                    verdict(shared["model_fraction_of_peak"], 0.5, False)
                    + f"; computed FLOP/s {shared['computed_fraction_of_peak']:.2f} of peak",
                ]
            )
            out.append(
                [
                    "Rollout, shared prompt encoded once per group / once per row (time)",
                    f"{shared['seconds']:.1f} s",
                    f"{o['per_row']['seconds']:.1f} s",
                    f"{o['shared_over_per_row_time']:.2f}",
                    "report",
                    "same tokens" if o["same_tokens_shared_per_row"] else "**tokens differ**",
                ]
            )
            if "gqa_over_repeat_kv_time" in o:
                out.append(
                    [
                        "Rollout, grouped-query attention in the SDPA kernel / KV heads copied per query head (time)",
                        f"{shared['seconds']:.1f} s",
                        f"{o['repeat_kv']['seconds']:.1f} s",
                        f"{o['gqa_over_repeat_kv_time']:.2f}",
                        "report",
                        "same tokens" if o["same_tokens_gqa_repeat_kv"] else "**tokens differ**",
                    ]
                )
            if "bf16_over_fp32_time" in o:
                out.append(
                    [
                        "Rollout, bfloat16 / float32 model (time)",
                        f"{o['bf16_shared']['seconds']:.1f} s",
                        f"{shared['seconds']:.1f} s",
                        f"{o['bf16_over_fp32_time']:.2f}",
                        "report",
                        f"{o['bf16_rows_with_the_same_tokens']:.0%} of rows the same tokens",
                    ]
                )
            else:
                out.append(["Rollout, bfloat16 / float32 model", "not measured", o["bf16_skipped"], "", "report", ""])
        if "update" in r:
            u = r["update"]
            for mode in ("lora", "full"):
                x = u[mode]
                out.append(
                    [
                        f"Update ({mode}), DPO-MD micro-batch of {x['pairs']} pairs, {x['tokens']} tokens: "
                        "FLOP/s computed / float32 peak",
                        f"{x['computed_gflops']:.0f} GFLOP/s",
                        f"peak {x['peak_gflops']:.0f} GFLOP/s",
                        f"{x['computed_fraction_of_peak']:.2f}",
                        ">= 0.5",
                        verdict(x["computed_fraction_of_peak"], 0.5, False)
                        + f"; 6·N·tokens {x['nominal_fraction_of_peak']:.2f}; reference forward {x['reference_share']:.0%}",
                    ]
                )
            out.append(
                [
                    "Update FLOPs, LoRA / full fine-tuning (frozen base: no weight gradients)",
                    f"{u['lora']['flops_over_forward']:.2f} forwards",
                    f"{u['full']['flops_over_forward']:.2f} forwards",
                    f"{u['lora_over_full_flops']:.2f}",
                    "report",
                    "",
                ]
            )
            if "shared_prompts_over_per_row_time" in u["lora"]:
                x = u["lora"]
                out.append(
                    [
                        "Update (lora): each distinct prompt encoded once / once per row (time)",
                        f"{x['seconds']:.2f} s",
                        f"{x['seconds'] / x['shared_prompts_over_per_row_time']:.2f} s",
                        f"{x['shared_prompts_over_per_row_time']:.2f}",
                        "report",
                        f"per-row FLOPs {x['per_row_flops_over_shared']:.2f}x; same values to float summation order",
                    ]
                )

    def demo_step(r: dict[str, Any]) -> None:
        threads = f"{r['threads']} thread" + ("s" if r["threads"] > 1 else "")
        if "skipped" in r:
            out.append(
                [f"CPU demo step, bfloat16 / float32 ({threads})", "not measured", r["skipped"], "", "report", ""]
            )
            return
        fp32 = r["float32"]
        for name, label in (
            ("bf16_sampling", "bfloat16 sampling"),
            ("bf16_sampling_updates", "bfloat16 sampling and updates"),
        ):
            ours, ratio = r[name], r[f"{name}_over_float32"]
            out.append(
                [
                    f"CPU demo step ({threads}, median of {r['steps']}-step runs): {label} / float32",
                    f"{ours['step']:.1f} s (play {ours['play']:.1f}, update {ours['update']:.1f})",
                    f"{fp32['step']:.1f} s (play {fp32['play']:.1f}, update {fp32['update']:.1f})",
                    f"{ratio['step']:.2f}",
                    "report",
                    f"play {ratio['play']:.2f}, update {ratio['update']:.2f}",
                ]
            )
        if "change" in r:  # demo_step.py --against COMMIT, kept beside the dtype rows by hand
            c = r["change"]
            ours, theirs, ratio = c["this_tree"], c["against"], c["this_tree_over_against"]
            out.append(
                [
                    f"CPU demo step ({c['threads']} threads, median of {c['rounds']} x {c['steps']}-step runs): "
                    f"{c['this_commit']} / {c['against_commit']} ({c['what']})",
                    f"{ours['step']:.1f} s (play {ours['play']:.1f}, update {ours['update']:.1f})",
                    f"{theirs['step']:.1f} s (play {theirs['play']:.1f}, update {theirs['update']:.1f})",
                    f"{ratio['step']:.2f}",
                    "report",
                    f"play {ratio['play']:.2f}, update {ratio['update']:.2f}",
                ]
            )

    def decode_attention(r: dict[str, Any]) -> None:
        for shape in r["shapes"]:
            out.append(
                [
                    f"decode-step attention, {shape['dtype']}, {shape['rows']} rows x {shape['positions']} "
                    f"cached positions ({r['threads']} threads): by hand / torch's SDPA kernel",
                    f"{shape['by_hand_ms']:.3f} ms",
                    f"{shape['kernel_ms']:.3f} ms",
                    f"{shape['ratio']:.2f}",
                    "report",
                    "",
                ]
            )

    def sampling(r: dict[str, Any]) -> None:
        ms, shape = r["ms"], f"{r['rows']} rows x {r['vocab']:,} tokens, {r['threads']} threads"
        same = "the same nucleus" if r["same_nucleus"] else "**another nucleus**"
        out.append(
            [
                f"decode-step draw at temperature {r['temperature']}, top-p {r['top_p']} ({shape}): "
                "nucleus among 256 candidates / whole sort",
                f"{ms['candidates']:.1f} ms",
                f"{ms['whole_sort']:.1f} ms",
                f"{ms['candidates'] / ms['whole_sort']:.2f}",
                "report",
                f"{same}; untruncated draw {ms['untruncated']:.1f} ms",
            ]
        )

    def prefix_sharing(r: dict[str, Any]) -> None:
        for name, label in (
            ("attacker_sft", "the attacker's SFT batch (8, two templates)"),
            ("defender_sft", "the defender's SFT batch (8)"),
            ("attacker_pairs", "one split's attacker pairs (8, one template)"),
        ):
            x = r[name]
            out.append(
                [
                    f"CPU demo update, {label}, forward + backward ({r['threads']} threads): "
                    "shared prompt prefixes / whole repeated prompts only",
                    f"{x['on_s']:.2f} s",
                    f"{x['off_s']:.2f} s",
                    f"{x['ratio']:.2f}",
                    "report",
                    f"{x['tokens']} tokens in {x['rows']} rows",
                ]
            )

    def eval_batch(r: dict[str, Any]) -> None:
        out.append(
            [
                f"CPU demo's greedy evaluation ({r['prompts']} held-out seeds, {r['tokens']} tokens, float32, "
                f"{r['threads']} threads): batch {r['large']} / batch {r['small']}",
                f"{r['large_s']:.1f} s",
                f"{r['small_s']:.1f} s",
                f"{r['large_s'] / r['small_s']:.2f}",
                "report",
                f"{r['same_answers']} of {r['prompts']} answers the same",
            ]
        )
        if "attacker_large_s" in r:
            out.append(
                [
                    f"CPU demo's red-team attacker ({r['attacker_rewrites']} sampled rewrites, {r['tokens']} tokens, "
                    f"float32, {r['threads']} threads): batch {r['large']} / batch {r['small']}",
                    f"{r['attacker_large_s']:.1f} s",
                    f"{r['attacker_small_s']:.1f} s",
                    f"{r['attacker_large_s'] / r['attacker_small_s']:.2f}",
                    "report",
                    "the samples differ (the batch draws its random numbers together)",
                ]
            )

    add: dict[str, Callable[[dict[str, Any]], None]] = {
        "orchestration": orchestration,
        "vllm": vllm,
        "training": training,
        "judge": judge,
        "memory": memory,
        "gpu": gpu,
        "reduction": reduction,
        "weight_push": weight_push,
        "plan": plan,
        "gpu_train": gpu_train,
        "logprobs": logprobs,
        "roofline": roofline,
        "judge_audit": judge_audit,
        "demo_step": demo_step,
        "decode_attention": decode_attention,
        "sampling": sampling,
        "prefix_sharing": prefix_sharing,
        "eval_batch": eval_batch,
    }
    for name, result in results.items():
        if "error" in result:
            out.append([name, "failed", result["error"], "", "", "**error**"])
        else:
            add[name](result)
    return out


def table(results: dict[str, Any]) -> str:
    machines = sorted({r["machine"] for r in results.values() if "machine" in r})
    lines = [f"Machine: {m}" for m in machines]
    lines += ["", "| measure | ours | baseline | ratio | target | verdict |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows(results)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), default=list(SCRIPTS))
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    # a partial run (--only) replaces its entries and keeps the others of the last full run
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    with tempfile.TemporaryDirectory() as folder:
        results |= {name: measure(name, Path(folder)) for name in args.only}
    results = {name: results[name] for name in SCRIPTS if name in results}
    args.json.write_text(json.dumps(results, indent=1))
    report = table(results)
    args.out.write_text(report)
    readme = HERE / "README.md"
    text = readme.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        readme.write_text(head + BEGIN + "\n" + report + END + rest.split(END, 1)[1])
    print(report)


if __name__ == "__main__":
    main()
