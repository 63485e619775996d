"""Huawei Cloud ModelArts: request signing, API client and a local simulator."""
