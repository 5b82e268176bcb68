#!/usr/bin/env python3
"""Turns the public-domain texts into the JSONL rows recipes/pretrain-tiny.yaml trains on.

Sources (copied from ../shared/data/datasets/text, see recipes/data/SOURCES.md):
  tinyshakespeare.txt  karpathy/char-rnn @ 6f9487a6 (MIT; the plays are public domain)
  war-and-peace.txt    ollama/ollama @ fb307609, tokenizer/testdata (MIT; the novel is public domain)
Rows are runs of whole paragraphs of at most ~1200 characters; every 50th row goes to valid.jsonl.
Usage: python3 recipes/prepare_pretrain_data.py SHAKESPEARE.txt WAR_AND_PEACE.txt OUT_DIR
"""
import json, os, sys

def rows(text, limit=1200):
    paras = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    cur = ""
    for p in paras:
        if cur and len(cur) + len(p) + 2 > limit:
            yield cur
            cur = ""
        cur = (cur + "\n\n" + p) if cur else p
        while len(cur) > 2 * limit:  # very long paragraphs: cut at a line break
            cut = cur.rfind("\n", 0, limit)
            cut = cut if cut > 0 else limit
            yield cur[:cut]
            cur = cur[cut:].lstrip()
    if cur:
        yield cur

def main():
    shakespeare, wap, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    all_rows = list(rows(open(shakespeare, encoding="utf-8").read()))
    all_rows += list(rows(open(wap, encoding="utf-8-sig").read()))
    with open(os.path.join(out, "train.jsonl"), "w", encoding="utf-8") as tr, \
         open(os.path.join(out, "valid.jsonl"), "w", encoding="utf-8") as va:
        for i, r in enumerate(all_rows):
            (va if i % 50 == 49 else tr).write(json.dumps({"text": r}, ensure_ascii=False) + "\n")
    print(f"{len(all_rows)} rows -> {out}")

if __name__ == "__main__":
    main()
