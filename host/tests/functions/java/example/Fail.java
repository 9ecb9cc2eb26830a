package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.Map;

/** Refuses every event, as a handler refusing a poison item. */
public class Fail implements RequestHandler<Map<String, Object>, String> {
    @Override
    public String handleRequest(Map<String, Object> event, Context context) {
        throw new IllegalArgumentException("cannot process " + event.get("key"));
    }
}
