"""The syntax of data specs, as help text: here, apart from the code that parses them, so the
agent's command line can show it without importing torch."""

PAIR_SOURCE_HELP = "karpathy:FILE.json?images=DIR[&split=S[,S2]] or captions:FILE.jsonl|FILE.csv?images=DIR"
DATA_SPEC_HELP = (
    "builtin:SEED:I/K[?samples=N&alpha=A], image-folder:DIR, cifar100:DIR[?split=train|test], ag-news:FILE.csv, "
    "karpathy:FILE.json?images=DIR[&split=S], captions:FILE.jsonl|FILE.csv?images=DIR; all but builtin take "
    "share=I/K[&alpha=A][&seed=S]"
)
