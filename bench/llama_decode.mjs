// llama.cpp's batch-1 decode and prefill speed on a GGUF file, through node-llama-cpp (the test-only
// install of tests/llama, scripts/setup.sh), for comparison with `ft generate` on the same file
// (bench/RESULTS.md "GGUF files: ft against llama.cpp").
//   node bench/llama_decode.mjs MODEL.gguf THREADS PROMPT_TOKENS GEN_TOKENS
// Prints one JSON line: {"threads", "prompt_tokens", "prefill_tok_s", "gen_tokens", "decode_tok_s"}.
// Prefill = time to the first generated token; decode = the remaining tokens' rate. Greedy.
import {getLlama, LlamaLogLevel} from "../tests/llama/node_modules/node-llama-cpp/dist/index.js";

const [model_path, threads = "1", np = "63", ng = "64"] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false,
                              logLevel: LlamaLogLevel.error, skipDownload: true});
const model = await llama.loadModel({modelPath: model_path, gpuLayers: 0, useMmap: false});
const n_ctx = Number(np) + Number(ng) + 8;
const context = await model.createContext({contextSize: n_ctx, threads: Number(threads), batchSize: n_ctx, sequences: 1});
const seq = context.getSequence();
const prompt = [];
for (let i = 0; i < Number(np); ++i) prompt.push(100 + ((i * 37) % 1000));
const t0 = performance.now();
let t1 = 0, n = 0;
for await (const t of seq.evaluate(prompt, {temperature: 0})) {
  if (++n === 1) t1 = performance.now();
  if (n >= Number(ng)) break;
}
const t2 = performance.now();
process.stdout.write(JSON.stringify({threads: Number(threads), prompt_tokens: Number(np),
  prefill_tok_s: Number(np) / ((t1 - t0) / 1000), gen_tokens: n, decode_tok_s: (n - 1) / ((t2 - t1) / 1000)}) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
