"""Local servers found by themselves: which LLM server, if any, answers on a local port.

`fingerprint` asks each port a few harmless questions (never with credentials) and tells what
answered: Ollama, LM Studio, llama.cpp, vLLM and the others, or nothing it knows.
"""
