#!/usr/bin/python3
"""verl's sandbox_fusion reward client, reimplemented with the standard library only.

The logic mirrors volcengine/verl, verl/utils/reward_score/sandbox_fusion/utils.py (read at
commit 10f0796d68ffa3d3b65cdc1fc55b1766d1b3af45): call_sandbox_api() (the payload it sends, the
retry on HTTP 504 only, every other HTTP error ending the attempts) and _process_single_case()
(how it turns the response's status / compile_result / run_result into a verdict: True, False,
-1 api or sandbox error, -2 runtime error, -3 timeout, -4 compile error). requests is replaced by
urllib; newer verl versions also send "memory_limit_MB", which is sent here too. verl sends no
Authorization header; BEARER_TOKEN (optional, not verl's) is only for trying an auth-protected server.

Usage: verl_sandbox_fusion_client.py URL [BEARER_TOKEN] < cases.json
cases.json: [{"code", "language", "stdin", "expected", "timeout", "memory_limit_mb"?}, ...]
Prints one JSON list: [[result_status, metadata_status], ...] in the order of the cases.
"""
import json
import sys
import time
import urllib.error
import urllib.request

MAX_RETRIES = 3
INITIAL_RETRY_DELAY = 1
API_TIMEOUT = 10
SUPPORTED_LANGUAGES = ["python", "cpp", "nodejs", "go", "go_test", "java", "php", "csharp", "bash", "typescript",
                       "sql", "rust", "cuda", "lua", "R", "perl", "D_ut", "ruby", "scala", "julia", "pytest", "junit",
                       "kotlin_script", "jest", "verilog", "python_gpu", "lean", "swift", "racket"]


def call_sandbox_api(url, code, stdin, compile_timeout, run_timeout, memory_limit_mb, language, token):
    if language not in SUPPORTED_LANGUAGES:
        return None, "Unsupported language: " + language
    payload = json.dumps({"compile_timeout": compile_timeout, "run_timeout": run_timeout,
                          "memory_limit_MB": memory_limit_mb, "code": code, "stdin": stdin,
                          "language": language, "files": {}, "fetch_files": []}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    request_timeout = compile_timeout + run_timeout + API_TIMEOUT
    last_error = None
    for attempt in range(MAX_RETRIES):
        try:
            request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=request_timeout) as response:
                body = response.read()
            return json.loads(body), None
        except urllib.error.HTTPError as e:
            if e.code == 504:  # verl retries a gateway timeout, with a linearly growing pause
                last_error = "API Request Error: Gateway Timeout (504) on attempt %d/%d" % (attempt + 1, MAX_RETRIES)
                if attempt < MAX_RETRIES - 1:
                    time.sleep(INITIAL_RETRY_DELAY * (attempt + 1))
                continue
            last_error = "API Request Error: %d %s" % (e.code, e.reason)  # raise_for_status()
            break
        except (urllib.error.URLError, OSError) as e:
            last_error = "API Request Error: %s" % e
            break
        except json.JSONDecodeError as e:
            last_error = "API Response JSON Decode Error: %s" % e
            break
    return None, ("API Call Failed: " + last_error) if last_error else "API Call Failed after retries"


def process_single_case(url, case, token):
    timeout = case["timeout"]
    api_response, error_msg = call_sandbox_api(url, case["code"], str(case["stdin"]), timeout, timeout,
                                               case.get("memory_limit_mb", 1024), case["language"], token)
    metadata = {"status": "unknown", "api_request_error": error_msg}
    result_status = -1
    if error_msg:
        metadata["status"] = "api_error"
        return result_status, metadata
    if not api_response:
        metadata["status"] = "unknown_api_state"
        return result_status, metadata
    api_status = api_response.get("status")
    compile_result = api_response.get("compile_result")
    run_result = api_response.get("run_result")
    compile_status = compile_result.get("status") if compile_result else None
    run_status = run_result.get("status") if run_result else None
    stdout = run_result.get("stdout") if run_result else None
    if api_status == "SandboxError":
        metadata["status"] = "sandbox_error"
        result_status = -1
    elif api_status == "Failed":
        is_compile_error = compile_result and (compile_status in ["Error", "TimeLimitExceeded"] or (
            compile_status == "Finished" and compile_result.get("return_code") != 0))
        if is_compile_error:
            metadata["status"] = "compile_timeout" if compile_status == "TimeLimitExceeded" else "compile_error"
            result_status = -4
        elif run_result:
            is_runtime_error = run_status == "TimeLimitExceeded" or run_status == "Error" or (
                run_status == "Finished" and run_result.get("return_code") != 0)
            if is_runtime_error:
                if run_status == "TimeLimitExceeded":
                    metadata["status"] = "timeout"
                    result_status = -3
                else:
                    metadata["status"] = "runtime_error"
                    result_status = -2
            else:
                metadata["status"] = "unknown_failure"
                result_status = -1
        else:
            metadata["status"] = "unknown_failure_state"
            result_status = -1
    elif api_status == "Success":
        if run_result and run_status == "Finished":
            actual_output = stdout if stdout is not None else ""
            if str(actual_output).rstrip("\n") == str(case["expected"]).rstrip("\n"):
                result_status = True
                metadata["status"] = "success"
            else:
                result_status = False
                metadata["status"] = "wrong_answer"
        else:
            metadata["status"] = "unexpected_success_state"
            result_status = -1
    else:
        metadata["status"] = "unknown_api_status_%s" % api_status
        result_status = -1
    return result_status, metadata


def main():
    url = sys.argv[1]
    token = sys.argv[2] if len(sys.argv) > 2 else None
    cases = json.load(sys.stdin)
    out = []
    for case in cases:
        status, metadata = process_single_case(url, case, token)
        out.append([status, metadata["status"]])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
