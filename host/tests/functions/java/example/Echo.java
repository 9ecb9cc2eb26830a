package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.HashMap;
import java.util.Map;

/** Answers with the event and what the function sees of its invocation. */
public class Echo implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    private static int invocations = 0;

    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        invocations++;
        Map<String, Object> out = new HashMap<>();
        out.put("event", event);
        out.put("requestId", context.getAwsRequestId());
        out.put("function", context.getFunctionName());
        out.put("memory", context.getMemoryLimitInMB());
        out.put("arn", context.getInvokedFunctionArn());
        out.put("remainingMs", context.getRemainingTimeInMillis());
        out.put("invocations", invocations);
        out.put("pid", ProcessHandle.current().pid());
        return out;
    }
}
