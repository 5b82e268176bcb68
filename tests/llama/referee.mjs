// llama.cpp as the referee for ft's GGUF files (test-only; node-llama-cpp's prebuilt CPU build).
//   node tests/llama/referee.mjs REQUEST.json      (or the request on stdin)
// Request: {"model": "m.gguf", "lora": "a.gguf" (optional), "lora_scale": 1, "threads": 1,
//           "context_size": 64, "tokenize": ["text", ...], "parse_special": false,
//           "generate": [{"prompt_ids": [1, 2, 3], "max_tokens": 16}, ...]}
// Prints one JSON object: {"vocabulary_type", "bos", "eos", "add_bos", "tokens": [[ids]...],
//                          "generated": [[ids]...]}. Greedy = temperature 0 (argmax), no penalties.
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const req = JSON.parse(readFileSync(process.argv[2] ?? 0, "utf8"));
const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false,
                              logLevel: LlamaLogLevel.error, skipDownload: true});
const model = await llama.loadModel({modelPath: req.model, gpuLayers: 0, useMmap: false});
const out = {vocabulary_type: model.vocabularyType, bos: model.tokens.bos, eos: model.tokens.eos,
             add_bos: model.tokens.shouldPrependBosToken, tokens: [], generated: []};
for (const text of req.tokenize ?? []) out.tokens.push(Array.from(model.tokenize(text, !!req.parse_special)));
if ((req.generate ?? []).length) {
  const ctxOpts = {contextSize: req.context_size ?? 64, threads: req.threads ?? 1, batchSize: req.context_size ?? 64,
                   sequences: 1};
  if (req.lora) ctxOpts.lora = {adapters: [{filePath: req.lora, scale: req.lora_scale ?? 1}]};
  const context = await model.createContext(ctxOpts);
  const seq = context.getSequence();
  for (const g of req.generate) {
    await seq.clearHistory();
    const ids = [];
    for await (const t of seq.evaluate(g.prompt_ids, {temperature: 0})) {
      ids.push(t);
      if (ids.length >= g.max_tokens) break;
    }
    out.generated.push(ids);
  }
  await context.dispose();
}
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify(out) + "\n");
