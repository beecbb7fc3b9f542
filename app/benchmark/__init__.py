"""The streaming benchmark client: sends prompts to an OpenAI-compatible server and measures what vLLM measures.

It imports only the standard library, httpx and ``app.domain.benchmark_stats``, so the same code can run on a VM
next to vLLM as well as on this laptop through the tunnel.
"""
